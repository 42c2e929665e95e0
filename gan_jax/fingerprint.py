"""Fingerprints of tiny fixed training runs: do two machines compute the same bits?

    python -m gan_jax.fingerprint [--modes default,portable] [--steps 20] [--record FILE]
        [--families seed_mlp,dcgan,pacgan_mlp,r3gan]

trains a tiny fixed run of each model family (seed_mlp, dcgan, pacgan_mlp, r3gan: 20 train
steps on stand-in batches drawn from fixed PRNG keys, so no dataset is read) and prints a short
hash of each final training state (params, optimiser states, EMA: every bit), once per CPU mode,
with the CPU's model, its instruction-set level and the software versions. Each mode runs in a
fresh process, since XLA reads its flags when JAX starts. Two machines whose hashes agree
computed bit-identical runs; `--record FILE` appends the line to a JSON-lines file
(experiments/results/fingerprints.jsonl is the project's: one line per machine kind seen).

Modes (gan_jax.cpu_mode): "default" lets XLA:CPU use every instruction the CPU has;
"portable" (GAN_JAX_PORTABLE_CPU=1) caps it at AVX2 and keeps dots and convolutions off
YNNPACK, whose kernels are chosen at run time from the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Any

FAMILIES = ("seed_mlp", "dcgan", "pacgan_mlp", "r3gan")
MODES = ("default", "portable")
HASH_CHARS = 12


def _family_config(model: str):
    """A tiny fixed config of `model`: small widths and batches, one CPU second or so per run."""
    from gan_jax import config as config_lib  # noqa: PLC0415

    config = config_lib.get_default_config()
    config.model = model
    config.batch_size = 16
    config.latent_dim = 16
    if model == "pacgan_mlp":
        config.dataset = "ring"
        config.image_shape = (2,)
        config.g_width = config.d_width = 32
    elif model == "r3gan":
        config.image_shape = (32, 32, 3)
        config.dataset = "stacked_mnist"
        config.g_width = config.d_width = 16
    elif model == "dcgan":
        config.g_width = config.d_width = 8
    else:
        config.g_width = config.d_width = 32
    config_lib.validate_config(config)
    return config


def state_hash(tree: Any) -> str:
    """sha256 of every leaf's dtype, shape and bytes, in tree order: the first HASH_CHARS hex."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(leaf)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:HASH_CHARS]


def run_family(model: str, *, steps: int) -> str:
    """The hash of `model`'s tiny run after `steps` train steps, in this process's mode."""
    import functools  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from gan_jax import models as models_lib  # noqa: PLC0415
    from gan_jax import optim, state, step, xla_options  # noqa: PLC0415

    config = _family_config(model)
    built = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    train_state = state.create_train_state(jax.random.key(0), config)
    train = xla_options.jit(
        functools.partial(step.train_step, models=built, optimizers=optimizers, config=config)
    )
    shape = (config.batch_size, *config.image_shape)
    key = jax.random.key(1)
    for i in range(steps):
        batch_key = jax.random.key(1000 + i)
        if model == "pacgan_mlp":
            images = jax.random.normal(batch_key, shape)
        else:
            images = jax.random.uniform(batch_key, shape, minval=-1.0, maxval=1.0)
        batch = {"image": images}
        if config.num_classes > 0:
            batch["label"] = jax.random.randint(batch_key, (config.batch_size,), 0, 10)
        train_state, _ = train(train_state, batch, key)
    return state_hash(train_state)


def machine() -> dict[str, Any]:
    """The CPU's model and instruction-set level, the machine's arch, and software versions."""
    import jax  # noqa: PLC0415
    import jaxlib  # noqa: PLC0415

    from gan_jax import cpu_mode  # noqa: PLC0415

    return {
        "cpu": cpu_mode.cpu_model(),
        "isa": cpu_mode.cpu_isa_level(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }


def _worker(steps: int, families: tuple[str, ...]) -> dict[str, Any]:
    from gan_jax import cpu_mode  # noqa: PLC0415

    return {
        "mode": "portable" if cpu_mode.portable_cpu() else "default",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "hashes": {model: run_family(model, steps=steps) for model in families},
    }


def fingerprint(
    *, modes: tuple[str, ...] = MODES, steps: int = 20, families: tuple[str, ...] = FAMILIES
) -> dict[str, Any]:
    """Runs each family once per mode, each mode in a fresh process; returns the record."""
    from gan_jax import cpu_mode  # noqa: PLC0415

    record = {**machine(), "steps": steps, "modes": {}}
    for mode in modes:
        env = {k: v for k, v in os.environ.items() if k != cpu_mode.PORTABLE_ENV}
        if mode == "portable":
            env[cpu_mode.PORTABLE_ENV] = "1"
        else:  # the parent's own portable flags must not leak into the default run
            flags = env.get("XLA_FLAGS", "").split()
            env["XLA_FLAGS"] = " ".join(f for f in flags if f not in cpu_mode.PORTABLE_XLA_FLAGS)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gan_jax.fingerprint",
                "--worker",
                "--steps",
                str(steps),
                "--families",
                ",".join(families),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"the {mode} fingerprint run failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        record["modes"][mode] = {"xla_flags": result["xla_flags"], **result["hashes"]}
    return record


def format_record(record: dict[str, Any]) -> str:
    """A few lines: the machine, then one row of hashes per mode."""
    families = [m for m in FAMILIES if m in next(iter(record["modes"].values()))]
    lines = [
        f"{record['cpu']} ({record['isa']}, {record['arch']}); python {record['python']}, "
        f"jax {record['jax']}, jaxlib {record['jaxlib']}; {record['steps']} steps per run",
        f"{'mode':<10}" + "".join(f"{model:>14}" for model in families),
    ]
    for mode, hashes in record["modes"].items():
        lines.append(f"{mode:<10}" + "".join(f"{hashes[model]:>14}" for model in families))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gan_jax.fingerprint", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: " + "|".join(MODES)
    )
    parser.add_argument("--steps", type=int, default=20, help="train steps per run")
    parser.add_argument("--record", default=None, help="append the record to this JSON-lines file")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated model families"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    families = tuple(f for f in args.families.split(",") if f)
    if not families or any(f not in FAMILIES for f in families):
        parser.error(f"--families takes some of {list(FAMILIES)}, got {args.families!r}")
    if args.worker:
        print(json.dumps(_worker(args.steps, families)))
        return 0
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"--modes takes {list(MODES)}, got {args.modes!r}")
    if args.record and families != FAMILIES:
        parser.error("--record keeps the full set of families, so that records compare")
    record = fingerprint(modes=modes, steps=args.steps, families=families)
    print(format_record(record))
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        print(f"appended to {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

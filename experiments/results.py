"""Trains every experiment on several seeds, evaluates each, and writes the results table.

Launch (hours on 2 CPU cores; resumable, see below):

    python experiments/results.py [--only NAME[,NAME]] [--seeds 3] [--out experiments/results]
                                  [--shorten F] [--update-readme]

For each experiment (every experiments/*.py defining `get_config`: the GAN experiments, not the
benchmarks, nor the 2-D PacGAN benchmarks, whose table experiments/pacgan_tables.py makes) and
each seed index i < --seeds, it trains the experiment's config with
`config.seed + i` in this process (`gan_jax.train.train_and_evaluate`, workdir
`<--workdirs>/<name>/steps_<N>/seed_<i>`), evaluates the final generator on the dataset's
default sample count (10,000 for MNIST, 26,000 for Stacked MNIST) against the test split, and
writes `<out>/<name>/seed_<i>.json`: the metrics and the real-data floor, wall time, images seen,
the machine (CPU model, cores), the versions of Python, JAX, Flax, Optax, Orbax, the git commit
and the config. Then `<out>/results_table.md`: mean ± sample standard deviation (n - 1) over the
seeds per experiment, beside the real-data floor of its dataset, with the wall time;
`--update-readme` also puts the table between `<!-- results:start -->` and
`<!-- results:end -->` in README.md.

Resumable: a seed whose JSON exists is skipped, and a seed killed mid-training resumes from its
workdir's last checkpoint, so rerunning the same command after a kill continues where it
stopped (that seed's wall time then counts only the part after the restart; its JSON records
`resumed_from_step`). `--table_only` rewrites the table from the JSONs without training.

Lengths: each experiment runs its documented `num_steps`, unless its file sets a module-level
`RESULTS_NUM_STEPS` (its documented length takes more than an hour on this project's CPU) or
--shorten F scales every length by F (for a trial of the command itself); the table then labels
the row "shortened to N of M steps" and gives the full-length command for an accelerator.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import math
import os
import platform
import re
import runpy
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO / "experiments"
README = REPO / "README.md"
TABLE_FILE = "results_table.md"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
# (result key, column title, decimals) in table order; "modes" only for Stacked MNIST.
COLUMNS = (
    ("fid", "FID ↓", 2),
    ("kid", "KID ↓", 4),
    ("precision", "precision ↑", 3),
    ("recall", "recall ↑", 3),
    ("classifier_score", "classifier score ↑", 2),
    ("modes", "modes ↑", 1),
    ("kl_to_uniform", "KL to uniform ↓", 3),
)
DATASET_NAMES = {"mnist": "MNIST", "stacked_mnist": "Stacked MNIST"}
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


# ----------------------------------------------------------------------------------------------
# Experiments.


def _in_this_table(path: Path) -> bool:
    """Whether `path` defines `get_config` and does not name another table command
    (a module-level `RESULTS_ELSEWHERE = "<command>"`, as the 2-D PacGAN benchmarks do)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    defines = any(
        isinstance(node, ast.FunctionDef) and node.name == "get_config" for node in tree.body
    )
    elsewhere = any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "RESULTS_ELSEWHERE" for t in node.targets)
        for node in tree.body
    )
    return defines and not elsewhere


def discover(directory: Path = EXPERIMENTS_DIR) -> dict[str, Path]:
    """{name: file} of the image GAN experiments: the files of `directory` defining
    `get_config`, sorted by name (benchmarks and the classifier's training script define none;
    experiments whose table another command makes set RESULTS_ELSEWHERE)."""
    return {
        path.stem: path
        for path in sorted(directory.glob("*.py"))
        if path.stem != Path(__file__).stem and _in_this_table(path)
    }


def select(experiments: dict[str, Path], only: str | None) -> dict[str, Path]:
    """The experiments named in the comma-separated `only` (all when None)."""
    if not only:
        return experiments
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in experiments]
    if unknown:
        raise SystemExit(
            f"error: --only names unknown experiments {unknown}; choose from {sorted(experiments)}"
        )
    return {name: experiments[name] for name in names}


def launch_command(path: Path) -> str:
    """The launch command an experiment's docstring gives, else the standard one."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"python -m gan_jax\.main [^\n]*", docstring)
    if match:
        return match.group(0).strip()
    return f"python -m gan_jax.main --config experiments/{path.name} --workdir workdirs/{path.stem}"


def run_length(module: dict[str, Any], documented: int, shorten: float) -> int:
    """Steps to train: the documented length, or RESULTS_NUM_STEPS, scaled by `shorten`."""
    steps = min(int(module.get("RESULTS_NUM_STEPS") or documented), documented)
    return max(1, math.ceil(steps * shorten)) if shorten != 1.0 else steps


# ----------------------------------------------------------------------------------------------
# One seed.


def _isa_note(machine_record: dict[str, Any]) -> str:
    """' (AVX512, portable)' for records that know their CPU kind; '' for older ones."""
    if "isa" not in machine_record:
        return ""
    return f" ({machine_record['isa']}{', portable' if machine_record.get('portable') else ''})"


def machine() -> dict[str, Any]:
    """What ran it: CPU model, instruction-set level and cores, the XLA flags in force and
    whether they are gan_jax's portable CPU mode, platform, JAX's devices."""
    import jax

    from gan_jax import cpu_mode

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devices = jax.devices()
    return {
        **cpu_mode.describe(),
        "cores": cores,
        "platform": platform.platform(),
        "devices": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def git_commit() -> str | None:
    """HEAD of the repository, with "+dirty" when the work tree has uncommitted changes outside
    experiments/results."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # The results' own files (the table rewritten after each experiment) do not count.
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!experiments/results",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _metric_values(result: dict[str, Any]) -> dict[str, Any]:
    keys = [key for key, _, _ in COLUMNS] + ["kid_std", "class_kl", "num_samples"]
    return {key: result[key] for key in keys if key in result}


def exit_if_stopped(state, target: int, *, what: str, unit: str) -> None:
    """End the command when training returned short of `target` steps.

    The trainer returns early only on SIGTERM / Ctrl-C, after saving a checkpoint; recording numbers
    then would file a shorter run under the full budget, so the command stops and says how to go on.
    """
    import jax
    import numpy as np

    reached = int(np.max(jax.device_get(state.step)))
    if reached < target:
        raise SystemExit(
            f"{what}: stopped at {unit} {reached:,} of {target:,} by a signal; its checkpoint is "
            "saved: rerun the same command to resume"
        )


def run_seed(
    name: str, path: Path, index: int, *, num_steps: int, workdirs: Path, eval_num_samples: int = 0
) -> dict:
    """Trains and evaluates seed `index` of an experiment; returns its JSON record."""
    from gan_jax import checkpointing, train, writers
    from gan_jax import config as config_lib

    module = runpy.run_path(str(path))
    config = module["get_config"]()
    documented = int(config.num_steps)
    config.seed = int(config.seed) + index
    config.num_steps = num_steps
    config.eval_at_end = True
    config.eval_num_samples = eval_num_samples  # 0: 10,000 (26,000 for Stacked MNIST)
    workdir = workdirs / name / f"steps_{num_steps}" / f"seed_{index}"
    resumed_from = None  # a seed killed mid-training continues from its last checkpoint
    if (workdir / "checkpoints").exists():
        with checkpointing.Checkpointer(workdir, read_only=True) as reader:
            resumed_from = reader.latest_step()

    start = time.perf_counter()
    state = train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    exit_if_stopped(state, num_steps, what=f"{name} seed {index}", unit="step")

    eval_path = workdir / train.EVAL_DIR / f"step_{num_steps}.json"
    if not eval_path.exists():
        raise RuntimeError(
            f"{name} seed {index}: no evaluation at {eval_path}; results need a dataset the "
            "shipped feature network scores (mnist or stacked_mnist)"
        )
    result = json.loads(eval_path.read_text())
    logs = [r for r in writers.read_metrics(workdir / writers.METRICS_FILE) if "d_loss" in r]
    return {
        "experiment": name,
        "seed_index": index,
        "seed": int(config.seed),
        "dataset": str(config.dataset),
        "num_steps": num_steps,
        "documented_num_steps": documented,
        "metrics": _metric_values(result),
        "floor": _metric_values(result.get("floor", {})),
        "wall_time_s": round(wall, 2),
        "train_time_s": round(float(logs[-1].get("train_time_s", math.nan)), 2) if logs else None,
        "eval_seconds": result.get("seconds"),
        "images_seen": num_steps * config_lib.real_images_per_step(config),
        "resumed_from_step": resumed_from,
        "machine": machine(),
        "versions": versions(),
        "git_commit": git_commit(),
        "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "workdir": str(workdir),
        "launch_command": launch_command(path),
        "config": json.loads(config.to_json_best_effort()),
    }


def seed_path(out: Path, name: str, index: int) -> Path:
    return out / name / f"seed_{index}.json"


def existing_result(path: Path, num_steps: int) -> dict | None:
    """The record at `path` when there is one, checked to be of `num_steps` steps."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record["num_steps"] != num_steps:
        raise SystemExit(
            f"error: {path} holds a {record['num_steps']}-step run but this command trains "
            f"{num_steps} steps; move it away, or rerun with the length it was made with "
            "(--shorten)"
        )
    return record


# ----------------------------------------------------------------------------------------------
# The table.


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1; None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(values: list[float], decimals: int) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def load_results(out: Path, names: list[str]) -> dict[str, list[dict]]:
    """{name: records in seed order} of the experiments with at least one seed_*.json."""
    found = {}
    for name in names:
        paths = sorted(
            (out / name).glob("seed_*.json"), key=lambda p: int(p.stem.removeprefix("seed_"))
        )
        if paths:
            found[name] = [json.loads(p.read_text()) for p in paths]
    return found


def format_table(results: dict[str, list[dict]]) -> str:
    """The markdown results table: one row per experiment (mean ± std over its seeds), one
    real-data floor row per dataset, then notes on shortened rows."""
    columns = [
        column
        for column in COLUMNS
        if any(column[0] in r["metrics"] for records in results.values() for r in records)
    ]
    header = ["experiment", "steps", "seeds", *(title for _, title, _ in columns), "wall time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes, floors = [], {}
    for name, records in results.items():
        steps = records[0]["num_steps"]
        documented = records[0]["documented_num_steps"]
        label = name
        if steps != documented:
            label = f"{name} (shortened to {steps:,} of {documented:,} steps)"
            notes.append(
                f"- {name}: shortened to {steps:,} of its {documented:,} steps for this CPU; "
                f"the full length on an accelerator: `{records[0]['launch_command']}`"
            )
        cells = [
            _cell([r["metrics"][k] for r in records if k in r["metrics"]], d) for k, _, d in columns
        ]
        minutes = _cell([r["wall_time_s"] / 60 for r in records], 1)
        lines.append(
            f"| {label} | {steps:,} | {len(records)} | {' | '.join(cells)} | {minutes} min |"
        )
        floors.setdefault(records[0]["dataset"], records[0]["floor"])
    for dataset, floor in floors.items():
        cells = [_cell([floor[k]], d) if k in floor else "–" for k, _, d in columns]
        n = floor.get("num_samples")
        title = f"real data: {DATASET_NAMES.get(dataset, dataset)} floor" + (
            f" ({n:,} training images)" if n else ""
        )
        lines.append(f"| {title} | – | – | {' | '.join(cells)} | – |")
    machines = sorted(
        {
            f"{r['machine']['cpu']}{_isa_note(r['machine'])}, {r['machine']['cores']} cores"
            for rs in results.values()
            for r in rs
        }
    )
    lines += [
        "",
        "Mean ± sample standard deviation over the seeds (seed = the config's seed + i); each "
        "seed's final generator scored on the dataset's default sample count against the test "
        "split by gan_jax's evaluator. Wall time: training and the final evaluation, in one "
        f"process. Machine: {'; '.join(machines)}. Regenerate: `python experiments/results.py`.",
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def update_readme(
    readme: Path, table: str, *, start_marker: str = README_START, end_marker: str = README_END
) -> None:
    """Replaces the text between the markers (the results table's by default) of `readme`."""
    text = readme.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(
            f"error: {readme} has no `{start_marker}` ... `{end_marker}` block; add the two "
            "markers where the table belongs"
        )
    head, tail = text[: start + len(start_marker)], text[end:]
    readme.write_text(f"{head}\n{table}{tail}")


# ----------------------------------------------------------------------------------------------
# Command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated experiment names")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per experiment")
    parser.add_argument("--out", type=Path, default=EXPERIMENTS_DIR / "results")
    parser.add_argument("--workdirs", type=Path, default=REPO / "workdirs" / "results")
    parser.add_argument("--shorten", type=float, default=1.0, help="scale every length by F")
    parser.add_argument("--update-readme", "--update_readme", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--table_only", "--table-only", action="store_true")
    parser.add_argument("--experiments_dir", type=Path, default=EXPERIMENTS_DIR)
    parser.add_argument(
        "--eval_num_samples", type=int, default=0, help="0: the dataset's default (for trials)"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or not 0.0 < args.shorten <= 1.0:
        parser.error("--seeds must be at least 1 and --shorten in (0, 1]")

    experiments = select(discover(args.experiments_dir), args.only)
    if not args.table_only:
        for name, path in experiments.items():
            module = runpy.run_path(str(path))
            documented = int(module["get_config"]().num_steps)
            steps = run_length(module, documented, args.shorten)
            for index in range(args.seeds):
                target = seed_path(args.out, name, index)
                if existing_result(target, steps) is not None:
                    print(f"{name} seed {index}: done before ({target})", flush=True)
                    continue
                print(f"{name} seed {index}: training {steps:,} steps", flush=True)
                record = run_seed(
                    name,
                    path,
                    index,
                    num_steps=steps,
                    workdirs=args.workdirs,
                    eval_num_samples=args.eval_num_samples,
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(record, indent=1) + "\n")
                os.replace(tmp, target)  # a kill never leaves half a JSON to be skipped
                metrics = record["metrics"]
                print(
                    f"{name} seed {index}: FID {metrics['fid']:.2f}, classifier score "
                    f"{metrics['classifier_score']:.2f}, {record['wall_time_s'] / 60:.1f} min",
                    flush=True,
                )

    table = format_table(load_results(args.out, list(discover(args.experiments_dir))))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / TABLE_FILE).write_text(table)
    print(table, end="")
    print(f"wrote {args.out / TABLE_FILE}")
    if args.update_readme:
        update_readme(args.readme, table)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # `python experiments/results.py` from a checkout
    sys.exit(main())

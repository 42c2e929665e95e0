"""Many runs at once: S independent runs of one config, stacked on a leading seed axis.

Run i of a stack is exactly the run that `config.seed + i` trains alone (gan_jax/train.py): its
own initialisation, noise and batch order, all pure functions of its seed and step. Every leaf of
a stacked TrainState carries a leading axis of size S; `jax.vmap` of the one-run step advances
all S in one compiled call.

    keys = seed_keys(config, S)                        # SeedKeys(init, train, grid), each [S]
    state = create_stacked_train_state(config, S)      # run i from keys.init[i]
    state, metrics = jax.jit(functools.partial(train_step, models=..., optimizers=...,
                                               config=...))(state, batches, keys.train)
    run_2 = unstack(state, 2)                          # a plain TrainState: run 2 alone

Fused steps on devices (k steps per dispatch, each run's batches drawn on device in its own
order from `run_seeds(config, S)`):

    mesh = seed_mesh(S)
    step_k = fused_train_step(models=..., optimizers=..., config=..., mesh=mesh, num_steps=k,
                              num_seeds=S)
    state = shard_stacked(state, mesh)
    state, metrics = step_k(state, images, labels, keys.train, run_seeds(config, S))
    # metrics: {name: f32 [S, k]}

Layouts. `seed_mesh` builds a 2-D ("seeds", "data") mesh. The stacked state, keys and seeds are
split along "seeds" (P("seeds")), so each device group holds S / seeds-axis-size whole runs and
vmaps over them; no collective crosses that axis. The uint8 split is replicated. Within a group,
each run is data-parallel over "data" exactly as `gan_jax.fused` runs one seed: each device
trains on its rows of the global batch, gradients and BatchNorm statistics averaged over
"data". Supported: S divisible by the "seeds" axis size, batch_size divisible by the "data" axis
size. By default the "seeds" axis takes gcd(S, devices) devices and "data" the rest (4 devices:
S = 4 -> 4 x 1, S = 2 -> 2 x 2, S = 3 -> 1 x 4); `data_parallel` chooses the "data" size.

Two forms of the fused step, one compiled program either way. `vectorize=True` vmaps the one-run
step over a device's runs: one batched computation, what fills a GPU or TPU that one small model
leaves idle. vmap turns each run's dots into batched dots (convolutions into grouped ones), which
XLA may accumulate in another order, so a run can differ from its solo run in the last bits, and
more where a gradient is a sum that nearly cancels (tests/test_seeds.py). `vectorize=False` puts
the runs' solo steps side by side in the program: each run computes bitwise what its solo run
computes (checked on CPU for seed_mlp and the dcgan). On CPU, where batching buys no speed (the
cores are busy with one run already), that is the default.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import fused, optim, xla_options
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.parallel import DATA_AXIS, check_divisible
from gan_jax.state import TrainState, create_train_state

SEED_AXIS = "seeds"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def check_num_seeds(num_seeds: int) -> None:
    """Raises ValueError unless `num_seeds` is an int >= 1."""
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds must be an integer >= 1 (runs to train), got {num_seeds!r}")


def run_seeds(config: ml_collections.ConfigDict, num_seeds: int) -> jax.Array:
    """The seed of each run: int32 [S] = config.seed + arange(S). Run i's data seed too."""
    check_num_seeds(num_seeds)
    first, last = int(config.seed), int(config.seed) + num_seeds - 1
    if first < _INT32_MIN or last > _INT32_MAX:
        raise ValueError(
            f"config.seed={first} with num_seeds={num_seeds} gives seeds up to {last}, outside "
            "int32; choose a smaller config.seed"
        )
    return first + jnp.arange(num_seeds, dtype=jnp.int32)


class SeedKeys(NamedTuple):
    """Each run's keys, as gan_jax/train.py splits them from `key(seed)`: key arrays [S]."""

    init: jax.Array  # initialises the state
    train: jax.Array  # the train step's key (step noise is fold_in(train, step))
    grid: jax.Array  # the sample grid's latents


def seed_keys(config: ml_collections.ConfigDict, num_seeds: int) -> SeedKeys:
    """Run i's (init, train, grid) keys: `jax.random.split(jax.random.key(config.seed + i), 3)`."""
    keys = jax.vmap(lambda seed: jax.random.split(jax.random.key(seed), 3))(
        run_seeds(config, num_seeds)
    )
    return SeedKeys(keys[:, 0], keys[:, 1], keys[:, 2])


def create_stacked_train_state(
    config: ml_collections.ConfigDict,
    num_seeds: int,
    *,
    models: models_lib.Models | None = None,
    optimizers: optim.Optimizers | None = None,
) -> TrainState:
    """S initial states stacked on a leading axis: run i is `create_train_state(init key of
    config.seed + i)`. `models` and `optimizers` default to those the config names."""
    init = functools.partial(
        create_train_state,
        config=config,
        models=models or models_lib.build_models(config),
        optimizers=optimizers or optim.build_optimizers(config),
    )
    # Not jitted, like the solo initialisation in gan_jax/train.py: under jit XLA fuses some
    # initialisers' arithmetic differently (the dcgan's label embedding differed in the last bit).
    return jax.vmap(init)(seed_keys(config, num_seeds).init)


def stack(trees: Sequence[Any]) -> Any:
    """Stacks S pytrees of one structure and shape leaf by leaf: every leaf gains a leading
    axis of size S (tree i at index i)."""
    trees = list(trees)
    if not trees:
        raise ValueError("stack needs at least one tree (run), got none")
    structure = jax.tree.structure(trees[0])
    for i, tree in enumerate(trees[1:], start=1):
        if jax.tree.structure(tree) != structure:
            raise ValueError(
                f"tree {i} differs in structure from tree 0; only runs of one config stack:\n"
                f"{jax.tree.structure(tree)}\nvs\n{structure}"
            )
    leaf_lists = [jax.tree_util.tree_leaves_with_path(tree) for tree in trees]
    for columns in zip(*leaf_lists, strict=True):
        shapes = {(jnp.shape(leaf), jnp.result_type(leaf)) for _, leaf in columns}
        if len(shapes) > 1:
            raise ValueError(
                f"leaf {jax.tree_util.keystr(columns[0][0])} differs in shape or dtype across "
                f"the trees: {sorted(map(str, shapes))}; only runs of one config stack"
            )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def num_seeds_of(state: TrainState) -> int:
    """S, the number of runs in a stacked TrainState (the size of every leaf's leading axis)."""
    step_shape = jnp.shape(state.step)
    if len(step_shape) != 1:
        raise ValueError(
            f"not a stacked state: its step has shape {step_shape}, where a stack of S runs has "
            "(S,); stack solo states with gan_jax.seeds.stack"
        )
    num_seeds = step_shape[0]
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num_seeds:
            raise ValueError(
                f"not a stacked state: step holds {num_seeds} runs but leaf "
                f"{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}"
            )
    return num_seeds


def unstack(stacked: Any, index: int) -> Any:
    """Run `index` of a stack: every leaf's row `index` (a solo TrainState for a stacked one)."""
    leaves = jax.tree.leaves(stacked)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("unstack needs a stacked tree: every leaf with a leading seed axis")
    num_seeds = jnp.shape(leaves[0])[0]
    if not isinstance(index, int) or not 0 <= index < num_seeds:
        raise IndexError(f"run index {index!r} out of range for a stack of {num_seeds} runs")
    return jax.tree.map(lambda leaf: leaf[index], stacked)


def _check_leading(name: str, tree: Any, num_seeds: int) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num_seeds:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; the stacked "
                f"state holds {num_seeds} runs, so it needs a leading axis of {num_seeds} (one "
                "entry per run)"
            )


def train_step(
    state: TrainState,
    batch: step_lib.Batch,
    key: jax.Array,
    *,
    models: models_lib.Models,
    optimizers: optim.Optimizers,
    config: ml_collections.ConfigDict,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`gan_jax.step.train_step` for each run of a stack: jit it as you would the solo step.

    state: a stacked TrainState of S runs; batch: {"image": f32 [S, B, H, W, C], "label":
    int [S, B]}, run i's batch at row i; key: a key array [S] (run i's train key, e.g.
    `seed_keys(config, S).train`). Returns the stacked state and metrics {name: f32 [S]}.
    `axis_name`: each run data-parallel over that axis, as in the solo step.
    """
    num_seeds = num_seeds_of(state)
    _check_leading("batch", batch, num_seeds)
    _check_leading("key", key, num_seeds)
    one_run = functools.partial(
        step_lib.train_step,
        models=models,
        optimizers=optimizers,
        config=config,
        axis_name=axis_name,
    )
    return jax.vmap(one_run)(state, batch, key)


def seed_mesh(
    num_seeds: int,
    *,
    devices: Sequence[jax.Device] | None = None,
    data_parallel: int | None = None,
) -> Mesh:
    """A ("seeds", "data") mesh over `devices` (default: all) for a stack of `num_seeds` runs.

    `data_parallel`: devices per run (the "data" size); by default devices // gcd(S, devices),
    so the "seeds" axis is as large as divides both S and the device count. Raises ValueError
    for a layout that cannot hold S runs.
    """
    check_num_seeds(num_seeds)
    devices = list(devices) if devices is not None else jax.devices()
    num_devices = len(devices)
    if data_parallel is None:
        data_parallel = num_devices // math.gcd(num_seeds, num_devices)
    if not isinstance(data_parallel, int) or data_parallel < 1 or num_devices % data_parallel:
        raise ValueError(
            f"data_parallel={data_parallel!r} must be a positive divisor of the {num_devices} "
            "devices"
        )
    seeds_size = num_devices // data_parallel
    _check_seed_layout(num_seeds, seeds_size)
    return jax.make_mesh(
        (seeds_size, data_parallel),
        (SEED_AXIS, DATA_AXIS),
        axis_types=(AxisType.Auto, AxisType.Auto),
        devices=devices,
    )


def _check_seed_layout(num_seeds: int, seeds_size: int) -> None:
    if num_seeds % seeds_size:
        raise ValueError(
            f"{num_seeds} runs do not split evenly over a '{SEED_AXIS}' mesh axis of "
            f"{seeds_size} devices; use a multiple of {seeds_size} runs, or a mesh whose "
            f"'{SEED_AXIS}' size divides {num_seeds} (seed_mesh(num_seeds, data_parallel=...))"
        )


def _mesh_sizes(mesh: Mesh) -> tuple[int, int]:
    """(seeds size, data size) of a seed mesh; raises ValueError for another mesh."""
    unknown = set(mesh.axis_names) - {SEED_AXIS, DATA_AXIS}
    if SEED_AXIS not in mesh.axis_names or unknown:
        raise ValueError(
            f"a stacked step needs a mesh with axes ('{SEED_AXIS}', '{DATA_AXIS}') (seed_mesh "
            f"builds one); got axes {mesh.axis_names}"
        )
    return mesh.shape[SEED_AXIS], mesh.shape.get(DATA_AXIS, 1)


def shard_stacked(tree: Any, mesh: Mesh) -> Any:
    """Puts a stacked tree (state, keys or seeds) on `mesh`, split along its leading seed axis
    over "seeds" and replicated over "data". Copies, so donating the result to a step never
    deletes the caller's tree."""
    seeds_size, _ = _mesh_sizes(mesh)
    leaves = jax.tree.leaves(tree)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("shard_stacked needs a stacked tree: every leaf with a leading seed axis")
    num_seeds = jnp.shape(leaves[0])[0]
    _check_leading("tree", tree, num_seeds)
    _check_seed_layout(num_seeds, seeds_size)

    def copy(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = jnp.copy(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return jnp.copy(leaf)

    return jax.device_put(jax.tree.map(copy, tree), NamedSharding(mesh, P(SEED_AXIS)))


def fused_train_step(
    *,
    models: models_lib.Models,
    optimizers: optim.Optimizers,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    num_steps: int,
    num_seeds: int,
    vectorize: bool | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """`gan_jax.fused.multi_step` for each of `num_seeds` stacked runs, under `jax.jit` +
    `jax.shard_map` on a seed mesh (see the module docstring), the state donated.

    Arguments of the returned function: the stacked state, the uint8 split (images [N, H, W, C],
    labels [N], replicated), the runs' train keys [S] and data seeds int32 [S] (`seed_keys(...)
    .train` and `run_seeds(...)`). Returns the stacked state and metrics {name: f32 [S, k]}.

    `vectorize`: True advances a device's runs with `jax.vmap` (one batched computation: what
    fills an accelerator); False places their solo steps side by side in the one program (each
    run's arithmetic is then its solo step's, and XLA may overlap independent runs). None: False
    on CPU, True elsewhere (see the module docstring).
    """
    check_num_seeds(num_seeds)
    if num_steps < 1:
        raise ValueError(f"steps per dispatch must be at least 1, got {num_steps}")
    seeds_size, data_size = _mesh_sizes(mesh)
    _check_seed_layout(num_seeds, seeds_size)
    check_divisible(config.batch_size, data_size)
    platform = mesh.devices.flat[0].platform
    if vectorize is None:
        vectorize = platform != "cpu"
    run_k_steps = functools.partial(
        fused.multi_step,
        models=models,
        optimizers=optimizers,
        config=config,
        num_steps=num_steps,
        axis_name=DATA_AXIS if DATA_AXIS in mesh.axis_names else None,
        backend=platform,
    )

    def local_runs(state, images, labels, train_keys, data_seeds):
        def one_run(run_state, train_key, data_seed):
            return run_k_steps(run_state, images, labels, train_key, data_seed=data_seed)

        if vectorize:
            return jax.vmap(one_run)(state, train_keys, data_seeds)
        runs = [
            one_run(*unstack((state, train_keys, data_seeds), i))
            for i in range(train_keys.shape[0])
        ]
        return stack(runs)

    # check_vma=False for pmap semantics, as in gan_jax.fused: the step averages over "data".
    mapped = jax.shard_map(
        local_runs,
        mesh=mesh,
        in_specs=(P(SEED_AXIS), P(), P(), P(SEED_AXIS), P(SEED_AXIS)),
        out_specs=(P(SEED_AXIS), P(SEED_AXIS)),
        check_vma=False,
    )

    def stacked_steps(state, images, labels, train_keys, data_seeds):
        stacked = num_seeds_of(state)
        if stacked != num_seeds:
            raise ValueError(
                f"the stacked state holds {stacked} runs but this step was built for "
                f"num_seeds={num_seeds}; build it (and its mesh) for {stacked} runs"
            )
        _check_leading("train_keys", train_keys, num_seeds)
        _check_leading("data_seeds", data_seeds, num_seeds)
        return mapped(state, images, labels, train_keys, data_seeds)

    return xla_options.jit(stacked_steps, platform=platform, donate_argnums=(0,))

"""PacGAN's Table 1 (2-D ring and grid) and Table 3 (Stacked MNIST, Unrolled-GAN setup),
reproduced with gan_jax's many-seeds trainer.

    python experiments/pacgan_tables.py [--table 1] [--variants ring,grid] [--packs 1,2,3,4]
                                        [--trials 10] [--budgets 1000,2000,4000,8000]
                                        [--update-readme]
    python experiments/pacgan_tables.py --table 3 [--variants half,quarter] [--packs 1,2]
                                        [--trials 3] [--budgets 2500,5000,10000]

Each row (variant, pack m) is one process-local stack of --trials runs (config.num_seeds, see
gan_jax.seeds) of the table's experiment with config.pack = m, trained in
`<--workdirs>/<variant>_pack<m>`: experiments/pacgan_2d.py:<ring|grid> for Table 1,
experiments/pacgan_stacked_mnist.py:<half|quarter> (D = 1/2 G, D = 1/4 G) for Table 3. The
budgets are evaluated in increasing order on the same runs: training stops at each budget,
evaluates every run (2,500 samples for Table 1, 25,600 for Table 3: eval/step_<B>.json) and
continues from its checkpoint to the next one. The learning rates are constant, so a run
resumed at a budget is exactly the run that never stopped: the numbers at a quarter and a half
of the budget are those of the same trajectories, not of shorter runs.

Writes `<--out>/<variant>_pack<m>.json` per row (each budget's mean ± standard error over the
trials, every trial's metrics, wall times, machine, versions) and `<--out>/table<N>.md`:
PacGAN's rows beside gan_jax's at the largest budget, then how the numbers move with the
budget. Table 3 adds FID and classifier score beside the mode counts (a mode count alone
rewards poor samples). A trial with no high-quality sample has no reverse KL (NaN in the
JSONs, and so is the mean it enters): its cell is the mean ± s.e. over the other trials,
marked "(k of n undefined)", and the legend says so. `--update-readme` puts the table
between `<!-- pacgan-table<N>:start -->` and `<!-- pacgan-table<N>:end -->` in README.md.
Rerunning the same command skips finished budgets and resumes a killed row from its last
checkpoint (a clone holds the committed rows, so it reprints their table: pass another --out
to train your own); `--table_only` rewrites the table from the JSONs.

PacGAN's full protocols: 400,000 iterations of batch 100 packs for Table 1
(`--budgets 100000,200000,400000`), 500,000 of batch 128 for Table 3 (`--budgets
125000,250000,500000`), hours per row on a GPU. On the 2 CPU cores this project runs on, a
Table 1 row of 10 trials does about 21 iterations a second at m = 1 (12-13 at m = 4), a Table
3 trial (D = 1/2 G, m = 1) about 37 alone. Rows beyond PacGAN's setup: `--set KEY=VALUE`
(repeatable) trains PacGAN's config with those overrides as a row of its own
(`<variant>_pack<m>_<key>-<value>.json`, labelled with them), e.g. `--packs 2 --set loss=hinge`.
It refuses the keys each row sets (pack, num_seeds, num_steps, checkpoint_every) and those
whose effect depends on num_steps (learning-rate schedules: g_optimizer / d_optimizer.schedule
and warmup_steps), which would make the early budgets other runs than the last one's start.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import math
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


class Metric(NamedTuple):
    key: str  # in the evaluation's JSON
    label: str  # column header
    decimals: int
    scale: float = 1.0


class Table(NamedTuple):
    """One of PacGAN's tables: its experiment, variants, metrics and published rows."""

    experiment: str  # experiments/<file>, whose get_config takes the variant
    variants: tuple[str, ...]
    variant_labels: dict[str, str]
    metrics: tuple[Metric, ...]
    # {variant: {pack: {metric key: (mean, s.e.)}}}, their published rows
    paper: dict[str, dict[int, dict[str, tuple[float, float]]]]
    paper_iterations: int
    paper_trials: int
    num_samples_note: str
    # What the real-data floor scores, `{n}` its size (the floor's num_samples, else the rows').
    floor_note: str


# PacGAN (Lin et al., NeurIPS 2018), mean ± standard error over their trials.
TABLE1 = Table(
    experiment="pacgan_2d.py",
    variants=("ring", "grid"),
    variant_labels={"ring": "ring", "grid": "grid"},
    metrics=(
        Metric("modes_covered", "modes (of {modes})", 1),
        Metric("high_quality", "HQ %", 1, 100.0),
        Metric("reverse_kl", "rev. KL", 2),
    ),
    paper={
        mixture: {
            pack: dict(zip(("modes_covered", "high_quality", "reverse_kl"), row, strict=True))
            for pack, row in rows.items()
        }
        for mixture, rows in {
            "ring": {
                1: ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
                2: ((7.9, 0.1), (95.6, 2.0), (0.07, 0.03)),
                3: ((7.8, 0.1), (97.7, 0.3), (0.10, 0.02)),
                4: ((7.8, 0.1), (95.9, 1.4), (0.07, 0.02)),
            },
            "grid": {
                1: ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
                2: ((23.8, 0.7), (91.3, 0.8), (0.13, 0.04)),
                3: ((24.6, 0.4), (94.2, 0.4), (0.06, 0.02)),
                4: ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
            },
        }.items()
    },
    paper_iterations=400_000,
    paper_trials=10,
    num_samples_note=(
        "HQ: samples within 3 std of their nearest mode; modes: modes with a high-quality "
        "sample; rev. KL: KL of the high-quality samples' mode histogram to uniform; 2,500 "
        "samples per trial."
    ),
    floor_note="Real data ({n} points of the mixture's test split, scored as the samples are)",
)
TABLE3 = Table(
    experiment="pacgan_stacked_mnist.py",
    variants=("half", "quarter"),
    variant_labels={"half": "D = ½ G", "quarter": "D = ¼ G"},
    metrics=(
        Metric("modes", "modes (of 1,000)", 1),
        Metric("kl_to_uniform", "KL", 2),
        Metric("fid", "FID", 1),
        Metric("classifier_score", "score", 1),
    ),
    paper={
        variant: {pack: {"modes": modes, "kl_to_uniform": kl} for pack, (modes, kl) in rows.items()}
        for variant, rows in {
            "quarter": {
                1: ((78.5, 17.6), (5.21, 0.19)),
                2: ((484.5, 33.0), (2.61, 0.22)),
                3: ((601.3, 32.2), (2.00, 0.17)),
                4: ((667.4, 29.0), (1.81, 0.15)),
            },
            "half": {
                1: ((487.7, 34.6), (2.24, 0.15)),
                2: ((840.7, 15.9), (1.00, 0.05)),
                3: ((866.6, 12.1), (0.90, 0.04)),
                4: ((820.2, 25.5), (1.15, 0.14)),
            },
        }.items()
    },
    paper_iterations=500_000,
    paper_trials=50,
    num_samples_note=(
        "Modes: the 1,000 digit triples the shipped MNIST classifier finds in 25,600 samples "
        "(each channel's argmax); KL: of their histogram to uniform; FID and classifier score "
        "against the Stacked-MNIST test set (PacGAN reports modes and KL only)."
    ),
    floor_note=(
        "Real data ({n} training images of the fixed Stacked MNIST, scored as the samples are: "
        "their modes and KL, FID and score against the test set)"
    ),
)
TABLES = {1: TABLE1, 3: TABLE3}
MODES = {"ring": 8, "grid": 25, "half": 1000, "quarter": 1000}
DEFAULTS = {  # --trials, --budgets, --packs per table
    1: (10, [1000, 2000, 4000, 8000], [1, 2, 3, 4]),
    3: (3, [2500, 5000, 10000], [1, 2]),
}


def readme_markers(number: int) -> tuple[str, str]:
    return f"<!-- pacgan-table{number}:start -->", f"<!-- pacgan-table{number}:end -->"


def _results_helpers():
    """experiments/results.py's machine(), versions(), git_commit(), update_readme(), and
    exit_if_stopped()."""
    return runpy.run_path(str(REPO / "experiments" / "results.py"))


def row_name(variant: str, pack: int, settings: dict[str, Any] | None = None) -> str:
    """`<variant>_pack<m>`, then the extra settings (`--set`) as `_key-value` parts."""
    parts = [f"{variant}_pack{pack}"]
    parts += [f"{key}-{value}" for key, value in sorted((settings or {}).items())]
    return "_".join(parts)


# Keys each row sets itself: an override of them would train another row under this one's name.
ROW_KEYS = ("pack", "num_seeds", "num_steps", "checkpoint_every")
# Keys whose effect depends on num_steps: a learning-rate schedule decays over the run
# (gan_jax.optim), so the run to budget 1,000 would not be the first 1,000 steps of the run to
# 8,000, and a row's budgets would silently stop being the same trajectories. (burn_in_steps
# and the EMA are fixed in steps, and do not depend on num_steps.)
NUM_STEPS_KEYS = tuple(
    f"{player}.{key}"
    for player in ("g_optimizer", "d_optimizer")
    for key in ("schedule", "warmup_steps")
)


def _refuse_schedules(config) -> None:
    """SystemExit unless both players' learning rates are constant (see NUM_STEPS_KEYS)."""
    for player in ("g_optimizer", "d_optimizer"):
        if config[player].schedule != "constant":
            raise SystemExit(
                f"error: {player}.schedule is {config[player].schedule!r}: a row's budgets are "
                "one run evaluated on the way, which needs constant learning rates"
            )


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`--set key=value` words -> {key: value}, values read as Python literals when they are
    (numbers, True / False, strings in quotes), else kept as text."""
    parsed = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set takes key=value (a config key), got {setting!r}")
        if key in ROW_KEYS:
            raise SystemExit(
                f"error: --set {key}: each row sets {', '.join(ROW_KEYS)} itself; "
                "use --packs, --trials and --budgets"
            )
        if key in NUM_STEPS_KEYS:
            raise SystemExit(
                f"error: --set {key}: a learning-rate schedule depends on num_steps, so the run "
                "to an early budget would not be the first steps of the run to the last one; a "
                "row's budgets are one run evaluated on the way and need constant learning "
                "rates (refused: " + ", ".join(NUM_STEPS_KEYS) + ")"
            )
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return parsed


def extra_label(settings: dict[str, Any]) -> str:
    """The settings as a row label: "" for PacGAN's own setup."""
    return ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def _apply(config, settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "get") or leaf not in node:
            raise SystemExit(f"error: --set {key}: the experiment's config has no such key")
        try:
            node[leaf] = value
        except TypeError as error:  # ml_collections keeps each key's type
            raise SystemExit(f"error: --set {key}={value!r}: {error}") from None


def train_row(
    table: Table,
    variant: str,
    pack: int,
    *,
    trials: int,
    budgets: list[int],
    workdirs: Path,
    out: Path,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) one row through every budget; returns and writes its record.

    `settings`: config overrides beyond PacGAN's setup (`--set`), which make a row of their own.
    """
    from gan_jax import train

    settings = settings or {}
    helpers = _results_helpers()
    name = row_name(variant, pack, settings)
    path = out / f"{name}.json"
    record = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    if record["budgets"] and record["trials"] != trials:
        # One row's budgets must be the same trajectories; mixing trial counts would not be.
        raise SystemExit(
            f"error: {path} holds {record['trials']} trials of {name}, not the {trials} asked "
            "for: pass the same --trials, or another --out (and --workdirs) for a new table"
        )
    workdir = workdirs / name
    keys = [metric.key for metric in table.metrics]
    for budget in sorted(budgets):
        if str(budget) in record["budgets"]:
            print(f"{name}: {budget:,} iterations done before ({path})", flush=True)
            continue
        experiment = REPO / "experiments" / table.experiment
        config = runpy.run_path(str(experiment))["get_config"](variant)
        config.pack = pack
        _apply(config, settings)
        _refuse_schedules(config)
        config.num_seeds = trials
        config.num_steps = budget
        config.checkpoint_every = min(int(config.checkpoint_every), budget)
        print(f"{name}: training {trials} trials to {budget:,} iterations", flush=True)
        start = time.perf_counter()
        state = train.train_and_evaluate(config, workdir)
        seconds = time.perf_counter() - start
        helpers["exit_if_stopped"](state, budget, what=name, unit="iteration")
        result = json.loads((workdir / train.EVAL_DIR / f"step_{budget}.json").read_text())
        if trials == 1:  # one run: no combine_runs, so no s.e.
            result = {**result, "sem": {}, "runs": [{"run_seed": int(config.seed), **result}]}
        record["budgets"][str(budget)] = {
            "metrics": {key: result[key] for key in keys},
            "sem": {key: result["sem"].get(key) for key in keys},
            "runs": [
                {"run_seed": run["run_seed"], **{key: run[key] for key in keys}}
                for run in result["runs"]
            ],
            "floor": result.get("floor"),
            "segment_wall_time_s": round(seconds, 1),
        }
        record.update(
            variant=variant,
            pack=pack,
            settings=settings,
            trials=trials,
            num_samples=result["num_samples"],
            machine=helpers["machine"](),
            versions=helpers["versions"](),
            git_commit=helpers["git_commit"](),
            finished_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            config=json.loads(config.to_json_best_effort()),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
        entry = record["budgets"][str(budget)]
        print(
            f"{name} at {budget:,}: {', '.join(_row_cells(table, entry))} ({seconds / 60:.1f} min)",
            flush=True,
        )
    return record


def _cell(mean: float | None, sem: float | None, metric: Metric) -> str:
    if mean is None:
        return "–"
    digits, scale = metric.decimals, metric.scale
    if sem is None:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * sem:.{digits}f}"


def _undefined(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _metric_cell(entry: dict[str, Any], metric: Metric) -> str:
    """The mean ± s.e. of a budget's trials. A metric undefined in some trials (NaN: the
    reverse KL of a trial with no high-quality sample, which has no histogram) makes the
    stored mean NaN; the cell is then the mean ± s.e. over the trials where it is defined,
    followed by "(k of n undefined)", or "undefined (n of n)" when none has it."""
    mean, sem = entry["metrics"][metric.key], entry["sem"].get(metric.key)
    runs = [run.get(metric.key) for run in entry.get("runs", [])]
    missing = sum(_undefined(value) for value in runs)
    if not missing:
        return _cell(mean, sem, metric)
    defined = [float(value) for value in runs if not _undefined(value)]
    if not defined:
        return f"undefined ({missing} of {len(runs)})"
    mean = sum(defined) / len(defined)
    sem = None
    if len(defined) > 1:
        variance = sum((value - mean) ** 2 for value in defined) / (len(defined) - 1)
        sem = math.sqrt(variance / len(defined))
    return f"{_cell(mean, sem, metric)} ({missing} of {len(runs)} undefined)"


def _row_cells(table: Table, entry: dict[str, Any]) -> list[str]:
    return [_metric_cell(entry, metric) for metric in table.metrics]


def _has_undefined(table: Table, records: dict) -> bool:
    return any(
        _undefined(run.get(metric.key))
        for record in records.values()
        for entry in record["budgets"].values()
        for run in entry.get("runs", [])
        for metric in table.metrics
    )


UNDEFINED_NOTE = (
    "A cell marked (k of n undefined) is the mean ± standard error over the trials where the "
    "metric is defined: k trials had no high-quality sample, hence no mode histogram and no "
    "reverse KL. Those are the most collapsed trials, so such a cell flatters its row."
)


def _paper_cells(table: Table, variant: str, pack: int) -> list[str]:
    row = table.paper.get(variant, {}).get(pack, {})
    cells = []
    for metric in table.metrics:
        if metric.key in row:
            mean, sem = row[metric.key]
            cells.append(f"{mean:.{metric.decimals}f} ± {sem:.{metric.decimals}f}")
        else:
            cells.append("–")
    return cells


def _variant(record: dict[str, Any]) -> str:
    return record.get("variant") or record["mixture"]  # rows written before Table 3 existed


Key = tuple[str, int, str]  # (variant, pack, extra settings label)


def format_table(table: Table, records: dict[Key, dict[str, Any]], *, sweep: bool = True) -> str:
    """Markdown: PacGAN's rows beside gan_jax's at its largest budget, the floor and the
    machine, then (with `sweep`) every row at every budget. Rows with extra settings (`--set`)
    follow their pack's, labelled with them. The README takes the table without the sweep."""
    variants = [v for v in table.variants if any(k[0] == v for k in records)]
    rows = sorted({(k[1], k[2]) for k in records})  # (pack, extra), PacGAN's setup first
    header = ["", "iterations"]
    for variant in variants:
        label = table.variant_labels[variant]
        header += [
            f"{label} {metric.label.format(modes=MODES[variant])}" for metric in table.metrics
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    papers_shown = set()
    for pack, extra in rows:
        label = "GAN" if pack == 1 else f"PacGAN{pack}"
        if pack not in papers_shown:
            papers_shown.add(pack)
            paper = [f"{label}, paper", f"{table.paper_iterations:,}"]
            for variant in variants:
                paper += _paper_cells(table, variant, pack)
            lines.append("| " + " | ".join(paper) + " |")
        budgets = sorted(
            {int(b) for k, r in records.items() if k[1:] == (pack, extra) for b in r["budgets"]}
        )
        top = budgets[-1]
        ours = [f"{label}, gan_jax" + (f" + {extra}" if extra else ""), f"{top:,}"]
        for variant in variants:
            record = records.get((variant, pack, extra))
            entry = record["budgets"].get(str(top)) if record else None
            ours += _row_cells(table, entry) if entry else ["–"] * len(table.metrics)
        lines.append("| " + " | ".join(ours) + " |")
    lines += [
        "",
        f"Mean ± standard error over the trials (PacGAN's rows: their Table {_number(table)}, "
        f"{table.paper_trials} trials, {table.paper_iterations:,} iterations). "
        + table.num_samples_note
        + (" " + UNDEFINED_NOTE if _has_undefined(table, records) else ""),
    ]
    # The floor depends on the variant's data alone: any row's first budget holds it.
    firsts = {
        _variant(r): (next(iter(r["budgets"].values()))["floor"], r) for r in records.values()
    }
    floors = {variant: floor for variant, (floor, _) in firsts.items() if floor}
    if floors:
        # Table 1: the rows' num_samples first test points; Table 3: 26,000 training images.
        sizes = {
            floor.get("num_samples") or firsts[v][1].get("num_samples")
            for v, floor in floors.items()
        }
        size_text = " / ".join(f"{int(n):,}" for n in sorted(n for n in sizes if n)) or "the"
        labels_of: dict[str, list[str]] = {}  # a floor's text -> the variants it belongs to
        for variant in (v for v in table.variants if v in floors):
            finer = [metric._replace(decimals=metric.decimals + 1) for metric in table.metrics]
            cells = [
                f"{metric.label.format(modes=MODES[variant])} "
                + _cell(floors[variant][metric.key], None, metric)
                for metric in finer
                if metric.key in floors[variant]
            ]
            # Table 3's columns share one dataset, so one floor: say it once for both.
            labels_of.setdefault(", ".join(cells), []).append(table.variant_labels[variant])
        described = [f"{' and '.join(labels)}: {cells}" for cells, labels in labels_of.items()]
        floor_note = table.floor_note.format(n=size_text)
        lines.append(f"{floor_note}: " + "; ".join(described) + ".")
    machines = sorted(
        {f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in records.values()}
    )
    number = _number(table)
    lines += [
        "",
        f"Machine: {'; '.join(machines)}. All trials of a row train together in one process "
        "(config.num_seeds). Regenerate: `python experiments/pacgan_tables.py"
        + ("" if table is TABLE1 else f" --table {number}")
        + "`.",
    ]
    if not sweep:
        return "\n".join(lines) + "\n"
    # The sweep: every row at every budget, with the wall time of the segment up to it.
    columns = [metric.label.split(" (")[0] for metric in table.metrics]
    lines += [
        "",
        "Every row at every budget:",
        "",
        "| row | iterations | " + " | ".join(columns) + " | trials | wall time (cumulative) |",
        "|" + "---|" * (len(columns) + 4),
    ]
    for (variant, pack, extra), record in sorted(records.items()):
        total = 0.0
        for budget in sorted(record["budgets"], key=int):
            entry = record["budgets"][budget]
            total += entry["segment_wall_time_s"]
            lines.append(
                f"| {table.variant_labels[variant]}, pack {pack}"
                + (f", {extra}" if extra else "")
                + f" | {int(budget):,} | {' | '.join(_row_cells(table, entry))} | "
                f"{record['trials']} | {total / 60:.1f} min |"
            )
    return "\n".join(lines) + "\n"


def _number(table: Table) -> int:
    return next(number for number, candidate in TABLES.items() if candidate is table)


def load_records(table: Table, out: Path) -> dict[Key, dict[str, Any]]:
    """The rows of `table` in `out`, keyed by (variant, pack, extra settings label)."""
    records = {}
    for path in sorted(out.glob("*_pack*.json")):
        record = json.loads(path.read_text())
        if _variant(record) in table.variants:
            extra = extra_label(record.get("settings", {}))
            records[(_variant(record), int(record["pack"]), extra)] = record
    return records


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=int, choices=sorted(TABLES), default=1)
    parser.add_argument(
        "--variants",
        "--mixtures",
        default=None,
        help="Table 1: ring and/or grid (default both); Table 3: half and/or quarter "
        "(default both)",
    )
    parser.add_argument("--packs", type=_int_list, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--budgets", type=_int_list, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "pacgan")
    parser.add_argument("--workdirs", type=Path, default=REPO / "workdirs" / "pacgan_tables")
    parser.add_argument("--update-readme", "--update_readme", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--table_only", "--table-only", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override beyond PacGAN's setup (repeatable), e.g. --set r1_weight=1.0; "
        "such rows are trained, stored and labelled apart from PacGAN's",
    )
    args = parser.parse_args(argv)
    if args.set and args.table_only:
        parser.error("--set trains rows of its own; --table_only trains nothing (drop one)")
    settings = parse_settings(args.set)
    table = TABLES[args.table]
    default_trials, default_budgets, default_packs = DEFAULTS[args.table]
    text = args.variants or ",".join(table.variants)  # both columns of either table
    variants = [v.strip() for v in text.split(",") if v.strip()]
    if not variants or any(v not in table.variants for v in variants):
        parser.error(
            f"--variants of Table {args.table} takes {' and/or '.join(table.variants)}, "
            f"got {text!r}"
        )
    trials = default_trials if args.trials is None else args.trials
    if trials < 1:
        parser.error("--trials must be at least 1")
    if not args.table_only:
        for variant in variants:
            for pack in args.packs or default_packs:
                train_row(
                    table,
                    variant,
                    pack,
                    trials=trials,
                    budgets=args.budgets or default_budgets,
                    workdirs=args.workdirs,
                    out=args.out,
                    settings=settings,
                )
    records = load_records(table, args.out)
    if not records:
        raise SystemExit(f"error: no rows of Table {args.table} in {args.out}; train some first")
    markdown = format_table(table, records)
    (args.out / f"table{args.table}.md").write_text(markdown)
    print(markdown, end="")
    if args.update_readme:
        start_marker, end_marker = readme_markers(args.table)
        headline = format_table(table, records, sweep=False) + (
            f"\nEvery row at every budget, with wall times: "
            f"[experiments/results/pacgan/table{args.table}.md]"
            f"(experiments/results/pacgan/table{args.table}.md).\n"
        )
        _results_helpers()["update_readme"](
            args.readme, headline, start_marker=start_marker, end_marker=end_marker
        )
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # `python experiments/pacgan_tables.py` from a checkout
    sys.exit(main())

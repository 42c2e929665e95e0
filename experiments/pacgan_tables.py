"""PacGAN's Table 1 (2-D ring and grid), reproduced with gan_jax's many-seeds trainer.

    python experiments/pacgan_tables.py [--mixtures ring,grid] [--packs 1,2,3,4] [--trials 10]
                                        [--budgets 1000,2000,4000] [--update-readme]

Each row (mixture, pack m) is one process-local stack of --trials runs (config.num_seeds, see
gan_jax.seeds) of experiments/pacgan_2d.py with config.pack = m, trained in
`<--workdirs>/<mixture>_pack<m>`. The budgets are evaluated in increasing order on the same
runs: training stops at each budget, evaluates every run on 2,500 samples (eval/step_<B>.json)
and continues from its checkpoint to the next one. The learning rate is constant, so a run
resumed at a budget is exactly the run that never stopped: the numbers at a quarter and a half
of the budget are those of the same trajectories, not of shorter runs.

Writes `<--out>/<mixture>_pack<m>.json` per row (each budget's mean ± standard error over the
trials, every trial's metrics, wall times, machine, versions) and `<--out>/table1.md`: PacGAN's
rows (400,000 iterations, 10 trials, their Table 1) beside gan_jax's at the largest budget, then
how the numbers move with the budget. `--update-readme` puts the table between
`<!-- pacgan-table1:start -->` and `<!-- pacgan-table1:end -->` in README.md. Rerunning the same
command skips finished budgets and resumes a killed row from its last checkpoint;
`--table_only` rewrites the table from the JSONs.

PacGAN's full protocol is 400,000 iterations of batch 100 packs: `--budgets 100000,200000,400000`
(hours per row on a GPU; the 2 CPU cores this project runs on do about 100 single-run
iterations per second at m = 1, and a row of 10 trials costs about 10 times that).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "pacgan_2d.py"
README = REPO / "README.md"
TABLE_FILE = "table1.md"
README_START, README_END = "<!-- pacgan-table1:start -->", "<!-- pacgan-table1:end -->"
METRICS = (("modes_covered", 1), ("high_quality", 1), ("reverse_kl", 2))  # (key, decimals)
MODES = {"ring": 8, "grid": 25}

# PacGAN's Table 1 (Lin et al., NeurIPS 2018), mean ± standard error over 10 trials:
# {mixture: {pack: (modes, high-quality %, reverse KL) as (mean, s.e.) pairs}}.
PAPER_TABLE1 = {
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
}
PAPER_ITERATIONS = 400_000


def _results_helpers():
    """experiments/results.py's machine(), versions(), git_commit() and update_readme()."""
    return runpy.run_path(str(REPO / "experiments" / "results.py"))


def row_name(mixture: str, pack: int) -> str:
    return f"{mixture}_pack{pack}"


def train_row(
    mixture: str, pack: int, *, trials: int, budgets: list[int], workdirs: Path, out: Path
) -> dict[str, Any]:
    """Trains (or resumes) one row through every budget; returns and writes its record."""
    from gan_jax import train

    helpers = _results_helpers()
    name = row_name(mixture, pack)
    path = out / f"{name}.json"
    record = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    if record["budgets"] and record["trials"] != trials:
        # One row's budgets must be the same trajectories; mixing trial counts would not be.
        raise SystemExit(
            f"error: {path} holds {record['trials']} trials of {name}, not the {trials} asked "
            "for: pass the same --trials, or another --out (and --workdirs) for a new table"
        )
    workdir = workdirs / name
    for budget in sorted(budgets):
        if str(budget) in record["budgets"]:
            print(f"{name}: {budget:,} iterations done before ({path})", flush=True)
            continue
        config = runpy.run_path(str(EXPERIMENT))["get_config"](mixture)
        config.pack = pack
        config.num_seeds = trials
        config.num_steps = budget
        config.checkpoint_every = min(int(config.checkpoint_every), budget)
        print(f"{name}: training {trials} trials to {budget:,} iterations", flush=True)
        start = time.perf_counter()
        train.train_and_evaluate(config, workdir)
        seconds = time.perf_counter() - start
        result = json.loads((workdir / train.EVAL_DIR / f"step_{budget}.json").read_text())
        if trials == 1:  # one run: no combine_runs, so no s.e.
            result = {**result, "sem": {}, "runs": [{"run_seed": int(config.seed), **result}]}
        record["budgets"][str(budget)] = {
            "metrics": {key: result[key] for key, _ in METRICS},
            "sem": {key: result["sem"].get(key) for key, _ in METRICS},
            "runs": [
                {"run_seed": run["run_seed"], **{key: run[key] for key, _ in METRICS}}
                for run in result["runs"]
            ],
            "floor": result.get("floor"),
            "segment_wall_time_s": round(seconds, 1),
        }
        record.update(
            mixture=mixture,
            pack=pack,
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
        metrics = record["budgets"][str(budget)]["metrics"]
        print(
            f"{name} at {budget:,}: modes {metrics['modes_covered']:.1f}, high quality "
            f"{100 * metrics['high_quality']:.1f}%, reverse KL {metrics['reverse_kl']:.3f} "
            f"({seconds / 60:.1f} min)",
            flush=True,
        )
    return record


def _cell(mean: float | None, sem: float | None, decimals: int, scale: float = 1.0) -> str:
    if mean is None:
        return "–"
    if sem is None:
        return f"{scale * mean:.{decimals}f}"
    return f"{scale * mean:.{decimals}f} ± {scale * sem:.{decimals}f}"


def _row_cells(entry: dict[str, Any]) -> list[str]:
    cells = []
    for key, decimals in METRICS:
        scale = 100.0 if key == "high_quality" else 1.0
        cells.append(_cell(entry["metrics"][key], entry["sem"].get(key), decimals, scale))
    return cells


def format_table(records: dict[tuple[str, int], dict[str, Any]]) -> str:
    """Markdown: PacGAN's rows beside gan_jax's at its largest budget, then the budget sweep."""
    mixtures = [m for m in ("ring", "grid") if any(k[0] == m for k in records)]
    packs = sorted({k[1] for k in records})
    header = ["", "iterations"]
    for mixture in mixtures:
        n = MODES[mixture]
        header += [f"{mixture} modes (of {n})", f"{mixture} HQ %", f"{mixture} rev. KL"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pack in packs:
        label = "GAN" if pack == 1 else f"PacGAN{pack}"
        paper = [f"{label}, paper", f"{PAPER_ITERATIONS:,}"]
        ours: list[str] | None = None
        for mixture in mixtures:
            (modes, hq, kl) = PAPER_TABLE1[mixture][pack]
            paper += [f"{modes[0]} ± {modes[1]}", f"{hq[0]} ± {hq[1]}", f"{kl[0]} ± {kl[1]}"]
        budgets = sorted(
            {int(b) for (m, p), r in records.items() if p == pack for b in r["budgets"]}
        )
        if budgets:
            top = budgets[-1]
            ours = [f"{label}, gan_jax", f"{top:,}"]
            for mixture in mixtures:
                record = records.get((mixture, pack))
                entry = record["budgets"].get(str(top)) if record else None
                ours += _row_cells(entry) if entry else ["–"] * 3
        lines.append("| " + " | ".join(paper) + " |")
        if ours:
            lines.append("| " + " | ".join(ours) + " |")
    notes = [
        "",
        "Mean ± standard error over the trials (PacGAN's rows: their Table 1, 10 trials, "
        f"{PAPER_ITERATIONS:,} iterations). HQ: samples within 3 std of their nearest mode; "
        "modes: modes with a high-quality sample; rev. KL: KL of the high-quality samples' "
        "mode histogram to uniform; 2,500 samples per trial.",
    ]
    # The floor depends on the mixture alone: any row's first budget holds it.
    by_mixture = {
        r["mixture"]: next(iter(r["budgets"].values()))["floor"] for r in records.values()
    }
    if by_mixture:
        notes.append(
            "Real data (2,500 test points): "
            + "; ".join(
                f"{m} {f['modes_covered']} modes, HQ {100 * f['high_quality']:.1f}%, rev. KL "
                f"{f['reverse_kl']:.3f}"
                for m, f in sorted(by_mixture.items())
            )
            + "."
        )
    lines += notes
    # The sweep: every row at every budget, with the wall time of the segment up to it.
    lines += ["", "| row | iterations | modes | HQ % | rev. KL | trials | wall time (cumulative) |"]
    lines.append("|---|---|---|---|---|---|---|")
    for (mixture, pack), record in sorted(records.items()):
        total = 0.0
        for budget in sorted(record["budgets"], key=int):
            entry = record["budgets"][budget]
            total += entry["segment_wall_time_s"]
            cells = _row_cells(entry)
            lines.append(
                f"| {mixture}, pack {pack} | {int(budget):,} | {' | '.join(cells)} | "
                f"{record['trials']} | {total / 60:.1f} min |"
            )
    machines = sorted(
        {f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in records.values()}
    )
    lines += [
        "",
        f"Machine: {'; '.join(machines)}. All trials of a row train together in one process "
        "(config.num_seeds). Regenerate: `python experiments/pacgan_tables.py`.",
    ]
    return "\n".join(lines) + "\n"


def load_records(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    records = {}
    for path in sorted(out.glob("*_pack*.json")):
        record = json.loads(path.read_text())
        records[(record["mixture"], int(record["pack"]))] = record
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
    parser.add_argument("--mixtures", default="ring,grid")
    parser.add_argument("--packs", type=_int_list, default=[1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--budgets", type=_int_list, default=[1000, 2000, 4000])
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "pacgan")
    parser.add_argument("--workdirs", type=Path, default=REPO / "workdirs" / "pacgan_tables")
    parser.add_argument("--update-readme", "--update_readme", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--table_only", "--table-only", action="store_true")
    args = parser.parse_args(argv)
    mixtures = [m.strip() for m in args.mixtures.split(",") if m.strip()]
    unknown = [m for m in mixtures if m not in MODES]
    if unknown or not mixtures:
        parser.error(f"--mixtures takes ring and/or grid, got {args.mixtures!r}")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if not args.table_only:
        for mixture in mixtures:
            for pack in args.packs:
                train_row(
                    mixture,
                    pack,
                    trials=args.trials,
                    budgets=args.budgets,
                    workdirs=args.workdirs,
                    out=args.out,
                )
    records = load_records(args.out)
    if not records:
        raise SystemExit(f"error: no rows in {args.out}; train some first")
    table = format_table(records)
    (args.out / TABLE_FILE).write_text(table)
    print(table, end="")
    if args.update_readme:
        _results_helpers()["update_readme"](
            args.readme, table, start_marker=README_START, end_marker=README_END
        )
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # `python experiments/pacgan_tables.py` from a checkout
    sys.exit(main())

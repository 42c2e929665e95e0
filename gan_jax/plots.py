"""The end-of-run plots: loss curves and quality curves, drawn from a run's metrics.jsonl,
and the 2-D mixtures' sample scatter plots.

Files under `<workdir>` (written by the training loop when the run ends):
  loss_curves.png     d_loss and g_loss against step (`plot_losses`).
  quality_curves.png  the quick evaluations made every `eval_every` steps (`plot_quality`): FID
                      and classifier score (rows) against step and against training minutes
                      (columns). A separate file beside the losses, so either can be looked at
                      (or embedded in a README) alone; written only when the run has evaluations.
  images/samples_<step>.png  for the 2-D mixtures, instead of an image grid: the samples over
                      the modes, one panel per run (`scatter_figure`).

Each `*_figure` function turns records (as `gan_jax.writers.read_metrics` returns them) into a
Matplotlib `Figure` and each `plot_*` function writes one to a PNG, so tests can read a figure's
data back from its axes. Matplotlib's Agg canvas is used directly: no global backend is
switched and no display is needed. Only process 0 writes; elsewhere `plot_*` return None.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gan_jax import writers

# The keys the training loop writes for each quick evaluation (gan_jax.train).
QUALITY_PREFIX = "quality/"
TRAIN_MINUTES = QUALITY_PREFIX + "train_minutes"  # training wall time, evaluations left out
# (metric, axis label, whether lower is better) of the quality plot's rows.
QUALITY_ROWS = (("fid", "FID", True), ("classifier_score", "classifier score", False))
FINAL_PREFIX = "eval/"  # the full evaluation at the end of a run


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _points(records: Iterable[Mapping[str, Any]], x_key: str, y_key: str) -> list[tuple]:
    """(x, y) of every record holding both keys as finite numbers, in record order."""
    points = []
    for record in records:
        x, y = record.get(x_key), record.get(y_key)
        if isinstance(x, int | float) and isinstance(y, int | float) and math.isfinite(y):
            points.append((x, y))
    return points


def _save(fig, png_path: str | os.PathLike) -> Path:
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    return png_path


# ----------------------------------------------------------------------------------------------
# Losses.


def loss_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    keys: Iterable[str] = ("d_loss", "g_loss"),
    title: str = "",
):
    """`keys` against step, one line per key, 700x400 pixels.

    Records without a key are skipped for that key; non-finite values are left out.
    """
    fig = _new_figure(7, 4)
    ax = fig.add_subplot()
    plotted = 0
    for key in keys:
        points = _points(records, "step", key)
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key, linewidth=1.0)
            plotted += 1
    if plotted:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return fig


def plot_losses(
    metrics_jsonl_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    keys: Iterable[str] = ("d_loss", "g_loss"),
    title: str | None = None,
) -> Path | None:
    """`loss_figure` of a metrics.jsonl file as a PNG; returns its path (None off process 0).

    A missing or empty file gives a figure saying "no data".
    """
    if not writers.is_writer_process():
        return None
    records = writers.read_metrics(metrics_jsonl_path)
    title = title or Path(metrics_jsonl_path).parent.name
    return _save(loss_figure(records, keys=keys, title=title), png_path)


# ----------------------------------------------------------------------------------------------
# Quality.


def has_quality(records: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any record holds a quick evaluation."""
    return any(QUALITY_PREFIX + "fid" in record for record in records)


def quality_figure(records: Sequence[Mapping[str, Any]], *, title: str = ""):
    """FID and classifier score against step and training minutes: 2x2 panels, 1000x650 pixels.

    Panel [row, 0] plots `quality/<metric>` against step, [row, 1] against
    `quality/train_minutes` (the run's training wall time up to that evaluation, the
    evaluations' own time left out), one marker per evaluation. Where present, a dashed line
    marks the real-data floor at the same number of samples (`quality/floor_<metric>`, training
    images against the same reference), and a star the full end-of-run evaluation
    (`eval/<metric>`, more samples, so its FID sits lower than the curve's for the same model)
    on the step panels. FID is drawn on a log axis: it falls by orders of magnitude.
    """
    from matplotlib.ticker import FuncFormatter

    fig = _new_figure(10, 6.5)
    axes = fig.subplots(len(QUALITY_ROWS), 2, squeeze=False)
    sizes = {r.get(QUALITY_PREFIX + "num_samples") for r in records} - {None}
    samples = f"{int(next(iter(sizes))):,} samples" if len(sizes) == 1 else "samples"
    final_sizes = [
        r[FINAL_PREFIX + "num_samples"] for r in records if FINAL_PREFIX + "num_samples" in r
    ]
    final_label = f"end of run ({int(final_sizes[-1]):,} samples)" if final_sizes else "end of run"
    for row, (metric, label, lower_is_better) in enumerate(QUALITY_ROWS):
        key = QUALITY_PREFIX + metric
        floor = _points(records, "step", QUALITY_PREFIX + "floor_" + metric)
        final = _points(records, "step", FINAL_PREFIX + metric)
        for col, (x_key, x_label) in enumerate(
            (("step", "step"), (TRAIN_MINUTES, "training minutes (evaluations excluded)"))
        ):
            ax = axes[row, col]
            points = _points(records, x_key, key)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.0, label=samples)
            if floor:
                ax.axhline(
                    floor[-1][1],
                    color="gray",
                    linestyle="--",
                    linewidth=1.0,
                    label=f"real data ({samples})",
                )
            if final and col == 0:
                fx, fy = zip(*final, strict=True)
                ax.plot(fx, fy, linestyle="none", marker="*", markersize=10, label=final_label)
            if not points:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            elif metric == "fid" and min(ys) > 0:
                ax.set_yscale("log")
                plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2x10^1
                ax.yaxis.set_major_formatter(plain)
                low, high = ax.get_ylim()
                if high < 10 * low:  # within a decade the 2..9 ticks are the only labels
                    ax.yaxis.set_minor_formatter(plain)
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{label} ({'lower' if lower_is_better else 'higher'} is better)")
            ax.grid(alpha=0.3, which="both")
            if points and row == 0 and col == 0:
                ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def plot_quality(
    metrics_jsonl_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path | None:
    """`quality_figure` of a metrics.jsonl file as a PNG; returns its path.

    Returns None, writing nothing, when the file holds no quick evaluation or off process 0.
    """
    if not writers.is_writer_process():
        return None
    records = writers.read_metrics(metrics_jsonl_path)
    if not has_quality(records):
        return None
    title = title or Path(metrics_jsonl_path).parent.name
    return _save(quality_figure(records, title=title), png_path)


# ----------------------------------------------------------------------------------------------
# 2-D samples.


def scatter_figure(
    samples: np.ndarray,
    means: np.ndarray,
    std: float,
    *,
    titles: Sequence[str] | None = None,
    threshold: float = 3.0,
):
    """Samples of 2-D generators over a mixture's modes: one panel per generator.

    samples: [S, n, 2] (S generators, e.g. the runs of a stack) or [n, 2]; means [K, 2] and std
    the mixture's. Each panel draws the samples as small translucent dots and every mode as a
    circle of radius `threshold` std (the high-quality region of gan_jax.evaluation.mixtures),
    on equal axes spanning the modes with a margin. Up to 5 panels a row, 3.2 inches each.
    """
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples[None]
    count = samples.shape[0]
    cols = min(count, 5)
    rows = math.ceil(count / cols)
    fig = _new_figure(3.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    span = float(np.abs(means).max()) * 1.5 + 10 * std
    for i, ax in enumerate(axes):
        if i >= count:
            ax.set_axis_off()
            continue
        for mean in means:
            ax.add_patch(_circle(mean, threshold * std))
        ax.scatter(samples[i, :, 0], samples[i, :, 1], s=2, alpha=0.3, color="black")
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
        ax.tick_params(labelsize="small")
        if titles is not None:
            ax.set_title(titles[i], fontsize="small")
    return fig


def _circle(center: np.ndarray, radius: float):
    from matplotlib.patches import Circle

    return Circle(tuple(center), radius, fill=False, color="tab:red", linewidth=0.8)


def figure_to_rgb(fig) -> np.ndarray:
    """A figure's pixels: uint8 [H, W, 3] (what `MetricWriter.write_images` takes)."""
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

"""Tests for gan_jax.plots: the figures hold the records' numbers, the PNGs are written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gan_jax import plots, writers
from gan_jax.writers import MetricWriter


def _quality_records() -> list[dict]:
    """A run's log: losses every 10 steps, a quick evaluation every 20, a final one at 60."""
    records = []
    for step in range(10, 70, 10):
        records.append({"step": step, "d_loss": 1.0 / step, "g_loss": 0.5 + step / 100})
        if step % 20 == 0 or step == 60:
            records.append(
                {
                    "step": step,
                    "quality/fid": 400.0 / step,
                    "quality/classifier_score": 1.0 + step / 10,
                    "quality/floor_fid": 2.5,
                    "quality/floor_classifier_score": 9.8,
                    "quality/num_samples": 2000,
                    "quality/train_minutes": step / 30,
                }
            )
    records.append({"step": 60, "eval/fid": 5.0, "eval/classifier_score": 7.5})
    return records


def _write(path, records) -> None:
    with MetricWriter(path, tensorboard=False) as writer:
        for record in records:
            writer.write(record["step"], {k: v for k, v in record.items() if k != "step"})


def test_loss_figure_holds_the_losses():
    records = _quality_records()
    fig = plots.loss_figure(records, title="run")
    d_line, g_line = fig.axes[0].lines
    losses = [r for r in records if "d_loss" in r]
    np.testing.assert_array_equal(d_line.get_xdata(), [r["step"] for r in losses])
    np.testing.assert_allclose(d_line.get_ydata(), [r["d_loss"] for r in losses])
    np.testing.assert_allclose(g_line.get_ydata(), [r["g_loss"] for r in losses])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["d_loss", "g_loss"]


def test_plot_losses_writes_png(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False) as w:
        for step in range(0, 100, 10):
            w.write(step, {"d_loss": 1.0 / (step + 1), "g_loss": 0.5, "images_per_s": 10.0})
    png = plots.plot_losses(tmp_path / "metrics.jsonl", tmp_path / "plots" / "losses.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (700, 400)
        # Not a blank canvas: the curves and axes draw many distinct colours.
        assert len(np.unique(np.asarray(im.convert("L")))) > 10
    empty = plots.plot_losses(tmp_path / "missing.jsonl", tmp_path / "empty.png")
    assert empty.exists()


def test_quality_figure_plots_each_metric_against_steps_and_minutes():
    records = _quality_records()
    quality = [r for r in records if "quality/fid" in r]
    fig = plots.quality_figure(records, title="run")
    (fid_step, fid_minutes), (score_step, score_minutes) = np.reshape(fig.axes, (2, 2))
    steps = [r["step"] for r in quality]
    minutes = [r["quality/train_minutes"] for r in quality]
    assert steps == [20, 40, 60]
    for ax, xs, key in (
        (fid_step, steps, "fid"),
        (fid_minutes, minutes, "fid"),
        (score_step, steps, "classifier_score"),
        (score_minutes, minutes, "classifier_score"),
    ):
        curve = ax.lines[0]
        np.testing.assert_allclose(curve.get_xdata(), xs)
        np.testing.assert_allclose(curve.get_ydata(), [r[f"quality/{key}"] for r in quality])
        floor = ax.lines[1]  # the real data at the same sample count, across the panel
        assert list(floor.get_ydata()) == [quality[0][f"quality/floor_{key}"]] * 2
    # The final (full) evaluation: a star on the step panels only.
    np.testing.assert_array_equal(fid_step.lines[2].get_xydata(), [[60, 5.0]])
    np.testing.assert_array_equal(score_step.lines[2].get_xydata(), [[60, 7.5]])
    assert len(fid_minutes.lines) == 2
    assert fid_step.get_yscale() == "log" and score_step.get_yscale() == "linear"
    assert "minutes" in fid_minutes.get_xlabel() and "2,000 samples" in [
        t.get_text() for t in fid_step.get_legend().get_texts()
    ]


def test_plot_quality_png_follows_the_data(tmp_path):
    records = _quality_records()
    _write(tmp_path / "a", records)
    _write(
        tmp_path / "b",
        [{**r, "quality/fid": r["quality/fid"] * 3} if "quality/fid" in r else r for r in records],
    )
    pixels = []
    for name in ("a", "b"):
        png = plots.plot_quality(
            tmp_path / name / writers.METRICS_FILE, tmp_path / f"{name}.png", title="t"
        )
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size == (1000, 650)
            pixels.append(np.asarray(im.convert("L")))
    assert len(np.unique(pixels[0])) > 10
    assert (pixels[0] != pixels[1]).any()  # other numbers, another picture


def test_plot_quality_without_evaluations_writes_nothing(tmp_path):
    _write(tmp_path, [{"step": 10, "d_loss": 1.0, "g_loss": 2.0}])
    assert plots.plot_quality(tmp_path / writers.METRICS_FILE, tmp_path / "q.png") is None
    assert not (tmp_path / "q.png").exists()


@pytest.mark.parametrize("plot", [plots.plot_losses, plots.plot_quality])
def test_other_processes_draw_nothing(tmp_path, monkeypatch, plot):
    _write(tmp_path, _quality_records())
    monkeypatch.setattr(writers, "is_writer_process", lambda: False)
    assert plot(tmp_path / writers.METRICS_FILE, tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()

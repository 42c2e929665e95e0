"""Tests for gan_jax.writers: JSONL and TensorBoard contents, resume truncation, grids, progress."""

from __future__ import annotations

import io
import json
import math
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto import event_pb2

from gan_jax import writers
from gan_jax.writers import MetricWriter, Progress, image_grid, read_metrics


def read_events(logdir) -> list[event_pb2.Event]:
    """Every event of every TensorBoard file under `logdir` (TFRecord framing, CRCs skipped)."""
    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            offset += 12  # length, then the length's CRC
            events.append(event_pb2.Event.FromString(data[offset : offset + length]))
            offset += length + 4  # payload, then its CRC
    return events


def scalars(events, tag: str) -> dict[int, float]:
    return {e.step: v.simple_value for e in events for v in e.summary.value if v.tag == tag}


# ----------------------------------------------------------------------------------------------
# JSON lines.


def test_metrics_line_is_strict_json_with_floats_and_non_finite_strings():
    line = writers.metrics_line(
        3,
        {
            "d_loss": jnp.float32(0.25),
            "g_loss": np.float64(1.5),
            "n": 7,
            "bad": float("nan"),
            "up": jnp.inf,
            "down": -np.inf,
            "one": jnp.ones((1,)),
        },
    )

    def no_constants(name):
        raise AssertionError(f"bare {name} in JSON")

    record = json.loads(line, parse_constant=no_constants)
    assert record == {
        "step": 3,
        "d_loss": 0.25,
        "g_loss": 1.5,
        "n": 7.0,
        "bad": "NaN",
        "up": "Infinity",
        "down": "-Infinity",
        "one": 1.0,
    }
    assert all(
        type(v) is float for k, v in record.items() if k not in ("step", "bad", "up", "down")
    )
    parsed = writers.parse_metrics_line(line)
    assert math.isnan(parsed["bad"]) and parsed["up"] == math.inf and parsed["down"] == -math.inf


def test_metrics_reject_non_scalars():
    with pytest.raises(TypeError, match="numeric scalar"):
        writers.metrics_line(1, {"v": np.zeros(3)})
    with pytest.raises(ValueError, match="reserved"):
        writers.metrics_line(1, {"step": 1})


def test_metric_writer_round_trip_and_tensorboard(tmp_path):
    with MetricWriter(tmp_path) as w:
        assert w.active
        w.write(1, {"d_loss": jnp.float32(0.5), "g_loss": 2.0})
        w.write(2, {"d_loss": 0.25, "g_loss": float("nan")})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[0] == {"step": 1, "d_loss": 0.5, "g_loss": 2.0}
    assert records[1]["d_loss"] == 0.25 and math.isnan(records[1]["g_loss"])

    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "d_loss") == {1: 0.5, 2: 0.25}
    assert scalars(events, "g_loss")[1] == 2.0 and math.isnan(scalars(events, "g_loss")[2])


def test_resume_drops_later_records_and_torn_lines(tmp_path):
    with MetricWriter(tmp_path) as w:
        for step in range(1, 11):
            w.write(step, {"d_loss": step / 10})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 11, "d_lo')  # killed mid-write

    # Resumed from the checkpoint at step 5: steps 6.. will be trained again.
    with MetricWriter(tmp_path, resume_step=5) as w:
        assert [r["step"] for r in read_metrics(w.metrics_path)] == [1, 2, 3, 4, 5]
        w.write(6, {"d_loss": 0.66})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["d_loss"] == 0.66
    # TensorBoard is told to discard the old events from step 6 on.
    events = read_events(tmp_path / "tensorboard")
    purges = [e.step for e in events if e.session_log.status == event_pb2.SessionLog.START]
    assert purges == [6]

    # Without resume_step nothing is dropped.
    with MetricWriter(tmp_path, tensorboard=False) as w:
        w.write(7, {"d_loss": 0.7})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6, 7]


def test_truncate_metrics_counts_and_keeps_file_when_nothing_to_drop(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert writers.truncate_metrics(path, 3) == 0
    path.write_text("".join(writers.metrics_line(s, {"x": s}) + "\n" for s in range(5)))
    before = path.stat().st_mtime_ns
    assert writers.truncate_metrics(path, 10) == 0
    assert path.stat().st_mtime_ns == before
    assert writers.truncate_metrics(path, 2) == 2
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2]


def test_write_images_png_and_tensorboard(tmp_path):
    grid = np.zeros((10, 12, 1), np.uint8)
    grid[2:5, 3:9] = 200
    with MetricWriter(tmp_path) as w:
        path = w.write_images(40, "samples/ema", grid, scale=2)
    assert path == tmp_path / "images" / "samples_ema_00000040.png"
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (24, 20)
        np.testing.assert_array_equal(np.asarray(im), grid[..., 0].repeat(2, 0).repeat(2, 1))
    images = [
        v.image for e in read_events(tmp_path / "tensorboard") for v in e.summary.value if v.image
    ]
    assert len(images) == 1 and (images[0].height, images[0].width) == (10, 12)
    with Image.open(io.BytesIO(images[0].encoded_image_string)) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("L")), grid[..., 0])


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "is_writer_process", lambda: False)
    stream = io.StringIO()
    with MetricWriter(tmp_path / "run", resume_step=0) as w:
        assert not w.active
        w.write(1, {"d_loss": 1.0})
        assert w.write_images(1, "samples", np.zeros((4, 4, 1), np.uint8)) is None
    with Progress(10, stream=stream, use_bar=False) as p:
        p.update(10, 1.0, {"d_loss": 1.0})
    assert not (tmp_path / "run").exists()
    assert stream.getvalue() == ""


# ----------------------------------------------------------------------------------------------
# Image grids.


def test_image_grid_layout_with_known_tiles():
    # Five 2x3 tiles, tile i filled with value 10 * (i + 1); three per row.
    images = np.stack([np.full((2, 3, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = image_grid(images, nrow=3, padding=1, pad_value=7)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    for i in range(5):
        row, col = divmod(i, 3)
        top, left = 1 + row * 3, 1 + col * 4
        assert (grid[top : top + 2, left : left + 3] == 10 * (i + 1)).all(), i
    # Padding rows/columns and the unused sixth cell hold the pad value.
    assert (grid[0] == 7).all() and (grid[3] == 7).all() and (grid[:, 4] == 7).all()
    assert (grid[4:6, 9:12] == 7).all()
    # Every pixel is either a tile value or padding: nothing overlaps or is lost.
    assert np.count_nonzero(grid != 7) == 5 * 2 * 3


def test_image_grid_defaults_and_pixel_ranges():
    images = np.zeros((5, 4, 4, 3), np.float32)  # RGB keeps three channels
    grid = image_grid(images, padding=0)
    assert grid.shape == (2 * 4, 3 * 4, 3)  # ceil(sqrt(5)) = 3 per row
    x = np.array([-1.0, 0.0, 1.0, 2.0, np.nan], np.float32).reshape(1, 1, 5, 1)
    assert image_grid(x, padding=0)[..., 0].tolist() == [[0, 128, 255, 255, 0]]
    u = np.array([0.0, 0.5, 1.0, -1.0, np.nan], np.float32).reshape(1, 1, 5, 1)
    assert image_grid(u, padding=0, pixel_range="unit")[..., 0].tolist() == [[0, 128, 255, 0, 0]]
    assert image_grid(np.zeros((2, 3, 3)), padding=0).shape == (3, 6, 1)  # [N, H, W] input
    with pytest.raises(ValueError, match="1 or 3"):
        image_grid(np.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="pixel_range"):
        image_grid(np.zeros((1, 2, 2, 1)), pixel_range="bytes")


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_save_image_grid_png_mode_and_size(tmp_path, channels, mode):
    images = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, channels)).astype(np.float32)
    path = writers.save_image_grid(images, tmp_path / "sub" / "grid.png")
    grid = image_grid(images)
    assert grid.shape[:2] == (4 * 30 + 2, 4 * 30 + 2)
    with Image.open(path) as im:
        assert im.mode == mode
        assert im.size == (grid.shape[1] * 3, grid.shape[0] * 3)  # 28 px digits upscaled 3x
        pixels = np.asarray(im).reshape(im.size[1], im.size[0], channels)
    np.testing.assert_array_equal(pixels[::3, ::3], grid)
    path1 = writers.save_image_grid(images, tmp_path / "one.png", scale=1)
    with Image.open(path1) as im:
        assert im.size == (grid.shape[1], grid.shape[0])


# ----------------------------------------------------------------------------------------------
# Progress.


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_plain_lines_when_not_a_tty():
    stream, clock = io.StringIO(), FakeClock()
    assert not stream.isatty()
    progress = Progress(100, 0, every_seconds=30, stream=stream, clock=clock)
    clock.t = 10.0
    progress.update(10, 1234.56, {"d_loss": jnp.float32(0.6931), "g_loss": 0.75, "other": 1})
    clock.t = 20.0
    progress.update(20, 1000.0, {"d_loss": 0.5, "g_loss": 0.5})  # within 30 s: no line
    clock.t = 45.0
    progress.update(50, 1000.0, {"d_loss": 0.5, "g_loss": 0.5})
    clock.t = 50.0
    progress.update(100, 999.0, {})  # the last step always prints
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    # 10 steps in 10 s: 90 to go at 1 step/s.
    assert lines[0] == (
        "step 10/100 (10.0%) | 1234.6 img/s | elapsed 0:00:10 | ETA 0:01:30 "
        "| d_loss 0.6931 g_loss 0.75"
    )
    # The rate since the previous line: 40 steps in 35 s, 50 to go.
    assert "step 50/100 (50.0%)" in lines[1] and "ETA 0:00:44" in lines[1]
    assert lines[2].startswith("step 100/100 (100.0%)") and "ETA 0:00:00" in lines[2]


def test_progress_resumed_run_counts_from_initial_step():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(1000, 900, stream=stream, use_bar=False, clock=clock)
    clock.t = 5.0
    progress.update(910)
    assert stream.getvalue().strip() == "step 910/1000 (91.0%) | elapsed 0:00:05 | ETA 0:00:45"


def test_progress_eta_leaves_out_compilation():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(1000, 0, every_seconds=30, stream=stream, use_bar=False, clock=clock)
    clock.t = 60.0  # compiling the 5-step dispatch
    progress.exclude_time(60.0)
    clock.t = 65.0  # its first dispatch: 5 steps in 5 s
    progress.update(5)
    clock.t = 70.0
    progress.update(10)  # within 30 s of the last line: no line
    clock.t = 95.0  # compiling another length, 25 s
    progress.exclude_time(25.0)
    clock.t = 100.0
    progress.update(15)
    lines = stream.getvalue().splitlines()
    # 1 step/s: 995 steps to go, not the 12,935 s that counting the compilation would give.
    assert lines[0] == "step 5/1000 (0.5%) | elapsed 0:01:05 | ETA 0:16:35"
    # Since the last line: 10 steps in 35 s, 25 of them compiling; 985 steps to go at 1 step/s.
    assert lines[1] == "step 15/1000 (1.5%) | elapsed 0:01:40 | ETA 0:16:25"
    # The next window starts afresh: 10 steps in 30 s, nothing left out; 975 to go.
    clock.t = 130.0
    progress.update(25)
    assert stream.getvalue().splitlines()[2].endswith("ETA 0:48:45")


def test_progress_bar_rate_leaves_out_excluded_time():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    progress = Progress(100, 0, stream=Terminal())
    before = progress._bar.last_print_t
    progress.exclude_time(50.0)
    # tqdm measures its rate from its last refresh: moved forward, the 50 s are not in it.
    assert progress._bar.last_print_t == before + 50.0
    progress.close()


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress(50, 0, stream=stream) as progress:
        for step in range(1, 51):
            progress.update(step, 321.0, {"d_loss": 0.5, "g_loss": 1.25})
    out = stream.getvalue()
    assert "50/50" in out and "img/s=321.0" in out and "g_loss=1.25" in out
    assert "ETA" not in out  # the bar's own format, not the plain lines


def test_format_duration():
    assert writers.format_duration(3725.4) == "1:02:05"
    assert writers.format_duration(float("nan")) == "?"

"""What people read and look at: JSON-lines metrics, TensorBoard, image grids, progress.

Only process 0 of a multi-process run writes (`jax.process_index() == 0`); on every other process
the writers and the progress reporter are silent no-ops, so the training loop calls them
unconditionally.

Files under `<workdir>`:
  metrics.jsonl   one JSON object per line: {"step": 100, "d_loss": 0.69, ...}. Non-finite values
                  are written as the strings "NaN", "Infinity" and "-Infinity" (plain JSON has no
                  such numbers, and Python's bare NaN tokens break other readers); `read_metrics`
                  turns them back into floats.
  tensorboard/    TensorBoard event files (tensorboardX; no TensorFlow needed).
  images/         PNG sample grids, `<name>_<step>.png`.

The plots drawn from metrics.jsonl are in gan_jax.plots.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
IMAGES_DIR = "images"

_NON_FINITE_TO_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_JSON_TO_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def is_writer_process() -> bool:
    """Whether this process writes logs and files (process 0 of a multi-process run)."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------------------------
# JSON lines.


def to_python_scalar(value: Any) -> float:
    """A Python float from a Python, NumPy or JAX scalar (or one-element array).

    Raises:
      TypeError: for anything with more than one element or not numeric.
    """
    array = np.asarray(value)
    if array.size != 1 or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"a metric must be a numeric scalar, got {array.dtype} {array.shape}")
    return float(array.reshape(()))


def _json_value(x: float) -> float | str:
    return x if math.isfinite(x) else _NON_FINITE_TO_JSON[repr(x)]


def metrics_line(step: int, metrics: Mapping[str, Any]) -> str:
    """One JSON object (no newline) holding `step` and every metric as a float.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity" so the line stays valid
    JSON for every reader.
    """
    record: dict[str, Any] = {"step": int(step)}
    for name, value in metrics.items():
        if name == "step":
            raise ValueError("'step' is reserved for the step number")
        record[name] = _json_value(to_python_scalar(value))
    return json.dumps(record, allow_nan=False)


def parse_metrics_line(line: str) -> dict[str, Any] | None:
    """The record of one metrics line, with "NaN"/"Infinity" strings back as floats.

    Returns None for a blank, truncated (a write killed half-way) or otherwise malformed line.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return {
        k: _JSON_TO_NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()
    }


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every well-formed record of a metrics.jsonl file, in file order; [] if it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as f:
        return [r for r in map(parse_metrics_line, f) if r is not None]


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Drops the records with `step` > `step` (and malformed lines) from a metrics.jsonl file.

    Used on resume from a checkpoint at `step`: the steps after it are trained again and would
    otherwise appear twice. The file is replaced atomically, so a kill here loses nothing.

    Returns:
      The number of lines dropped.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    with path.open() as f:
        for line in f:
            record = parse_metrics_line(line)
            if record is not None and record["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
    return dropped


# ----------------------------------------------------------------------------------------------
# Image grids.


def to_uint8(images: Any, *, pixel_range: Literal["symmetric", "unit"] = "symmetric") -> np.ndarray:
    """Images as uint8 in [0, 255]; floats map from [-1, 1] ("symmetric") or [0, 1] ("unit").

    Out-of-range values are clipped and NaN becomes 0 (black); uint8 input is returned unchanged.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    x = images.astype(np.float64)
    if pixel_range == "symmetric":
        x = (x + 1.0) / 2.0
    elif pixel_range != "unit":
        raise ValueError(f"pixel_range must be 'symmetric' or 'unit', got {pixel_range!r}")
    # NaN after the range mapping, so it is black in either range (a diverged G shows as black).
    x = np.nan_to_num(x, nan=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(
    images: Any,
    *,
    nrow: int | None = None,
    pixel_range: Literal["symmetric", "unit"] = "symmetric",
    padding: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Tiles a batch of images into one image, row by row.

    Args:
      images: [N, H, W, C] with C in (1, 3), or [N, H, W] (grayscale); float in `pixel_range`, or
        uint8.
      nrow: images per row; default ceil(sqrt(N)), a square-ish grid.
      pixel_range: "symmetric" for [-1, 1] (tanh generators), "unit" for [0, 1] (sigmoid).
      padding: pixels of `pad_value` between tiles and around the border.
      pad_value: uint8 value of the padding (255: white lines between black MNIST tiles).

    Returns:
      uint8 [rows * (H + padding) + padding, nrow * (W + padding) + padding, C], where
      rows = ceil(N / nrow); image i sits at row i // nrow, column i % nrow. Unused cells of the
      last row are `pad_value`.
    """
    images = to_uint8(images, pixel_range=pixel_range)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be [N>0, H, W, 1 or 3], got shape {images.shape}")
    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8
    )
    for i in range(n):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def save_png(grid: np.ndarray, path: str | os.PathLike, *, scale: int = 1) -> Path:
    """Writes a uint8 [H, W, 1|3] (or [H, W]) image as PNG, upscaled `scale`x (nearest).

    Grayscale is written as mode "L", three channels as "RGB". Parent directories are created.
    """
    from PIL import Image  # local: Pillow is only needed when images are written

    grid = np.asarray(grid)
    if grid.dtype != np.uint8:
        raise TypeError(f"grid must be uint8, got {grid.dtype}; see image_grid/to_uint8")
    if grid.ndim == 3 and grid.shape[-1] == 1:
        grid = grid[..., 0]
    if not (grid.ndim == 2 or (grid.ndim == 3 and grid.shape[-1] == 3)):
        raise ValueError(f"grid must be [H, W], [H, W, 1] or [H, W, 3], got {grid.shape}")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale > 1:
        # Integer nearest-neighbour upscaling keeps every pixel a sharp block.
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid), mode="L" if grid.ndim == 2 else "RGB").save(path)
    return path


def default_scale(image_height: int, *, min_tile_pixels: int = 64) -> int:
    """The smallest integer upscale making a tile at least `min_tile_pixels` tall (28 -> 3)."""
    return max(1, math.ceil(min_tile_pixels / image_height))


def save_image_grid(
    images: Any,
    path: str | os.PathLike,
    *,
    scale: int | None = None,
    nrow: int | None = None,
    pixel_range: Literal["symmetric", "unit"] = "symmetric",
    padding: int = 2,
    pad_value: int = 255,
) -> Path:
    """`image_grid` of a batch [N, H, W, C], saved as a PNG at `path`; returns the path.

    Args:
      scale: integer upscale factor; default `default_scale(H)` so 28x28 digits show at 84x84.
      nrow, pixel_range, padding, pad_value: see `image_grid`.
    """
    images = np.asarray(images)
    grid = image_grid(
        images, nrow=nrow, pixel_range=pixel_range, padding=padding, pad_value=pad_value
    )
    return save_png(grid, path, scale=scale or default_scale(images.shape[1]))


# ----------------------------------------------------------------------------------------------
# Metric writer.


class MetricWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard; writes image grids.

    On a process other than 0 every method does nothing.

    Args:
      workdir: the run's directory (local or a mounted file system).
      resume_step: the step training starts from; records after it are dropped from an existing
        metrics.jsonl (they are about to be trained again), and TensorBoard is told to discard
        its events from later steps (tensorboardX `purge_step`). Pass 0 for a fresh run so a
        stale log of a run killed before its first checkpoint is cleared too; None appends
        without touching what is there.
      tensorboard: also write TensorBoard event files.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ):
        self._active = is_writer_process()
        self._workdir = Path(workdir)
        self._file: TextIO | None = None
        self._tb = None
        if not self._active:
            return
        self._workdir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.metrics_path, resume_step)
        self._file = self.metrics_path.open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # local: import cost only where used

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(self._workdir / TENSORBOARD_DIR), purge_step=purge)

    @property
    def active(self) -> bool:
        """Whether this process writes (process 0)."""
        return self._active

    @property
    def metrics_path(self) -> Path:
        return self._workdir / METRICS_FILE

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Writes one record of scalars at `step` (values: Python/NumPy/JAX scalars)."""
        if not self._active or self._file is None:
            return
        line = metrics_line(step, metrics)
        # Flushed line by line: a run killed at any moment loses at most the line being written.
        self._file.write(line + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, to_python_scalar(value), int(step))

    def write_images(
        self, step: int, name: str, grid_uint8: np.ndarray, *, scale: int = 1
    ) -> Path | None:
        """Writes a uint8 grid [H, W, 1|3] to TensorBoard and to `images/<name>_<step>.png`.

        Args:
          step: training step (the PNG name zero-pads it to 8 digits so files sort).
          name: e.g. "samples" or "samples_ema"; "/" becomes "_" in the file name.
          grid_uint8: from `image_grid`.
          scale: integer upscale of the PNG (TensorBoard gets the grid as is).

        Returns:
          The PNG's path on process 0, None elsewhere.
        """
        if not self._active:
            return None
        grid = np.asarray(grid_uint8)
        if grid.ndim == 2:
            grid = grid[..., None]
        if self._tb is not None:
            self._tb.add_image(name, grid, int(step), dataformats="HWC")
        file_name = f"{name.replace('/', '_')}_{int(step):08d}.png"
        return save_png(grid, self._workdir / IMAGES_DIR / file_name, scale=scale)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Progress.


def format_duration(seconds: float) -> str:
    """`H:MM:SS` for finite seconds >= 0, "?" otherwise."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Training progress: a tqdm bar on a terminal, plain periodic lines otherwise.

    On a terminal the bar shows step, rate, ETA, images/s and the display metrics. Elsewhere (logs
    of batch jobs, CI) a line such as

        step 1200/5000 (24.0%) | 1534.2 img/s | elapsed 0:01:02 | ETA 0:03:15 | d_loss 0.6931 ...

    is printed on the first update, then at most every `every_seconds`, and at the last step. The
    ETA uses the step rate since the previous line, less the time handed to `exclude_time` (the
    loop hands it each compilation: a 71 s compile before a first 5-step dispatch would
    otherwise make the first ETA hours long); `elapsed` is the whole time. Silent on processes
    other than 0.

    Args:
      total_steps: the step training ends at.
      initial_step: the step training starts from (after a resume, the restored step).
      every_seconds: minimum interval between plain lines.
      stream: where to write; default sys.stderr.
      use_bar: force the bar on/off; default: whether `stream` is a terminal.
      display_keys: metrics shown, when present in `update`'s metrics.
      clock: seconds, monotonic (injectable for tests).
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        *,
        every_seconds: float = 30.0,
        stream: TextIO | None = None,
        use_bar: bool | None = None,
        display_keys: Iterable[str] = ("d_loss", "g_loss"),
        clock: Callable[[], float] = time.monotonic,
    ):
        self._active = is_writer_process()
        self._total = int(total_steps)
        self._stream = stream if stream is not None else sys.stderr
        self._every = float(every_seconds)
        self._keys = tuple(display_keys)
        self._clock = clock
        self._start = clock()
        self._last_step = int(initial_step)
        self._last_line: tuple[float, int] | None = None  # (time, step) of the last plain line
        self._excluded = 0.0  # seconds since the last plain line left out of the rate
        self._bar = None
        if use_bar is None:
            use_bar = bool(getattr(self._stream, "isatty", lambda: False)())
        if self._active and use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self._total,
                initial=int(initial_step),
                file=self._stream,
                unit="step",
                dynamic_ncols=True,
                smoothing=0.1,
            )
        self._line_origin = (self._start, int(initial_step))

    def _shown_metrics(self, metrics: Mapping[str, Any] | None) -> dict[str, float]:
        metrics = metrics or {}
        return {k: to_python_scalar(metrics[k]) for k in self._keys if k in metrics}

    def format_line(
        self, step: int, images_per_s: float | None, metrics: Mapping[str, Any] | None
    ) -> str:
        """The plain progress line for `step` at the current clock time."""
        now = self._clock()
        since_time, since_step = self._last_line or self._line_origin
        seconds = now - since_time - self._excluded
        rate = (step - since_step) / seconds if seconds > 0 else math.nan
        eta = (self._total - step) / rate if rate > 0 else math.nan
        percent = 100.0 * step / self._total if self._total else 100.0
        parts = [f"step {step}/{self._total} ({percent:.1f}%)"]
        if images_per_s is not None:
            parts.append(f"{to_python_scalar(images_per_s):.1f} img/s")
        parts.append(f"elapsed {format_duration(now - self._start)}")
        parts.append(f"ETA {format_duration(eta) if step < self._total else '0:00:00'}")
        shown = self._shown_metrics(metrics)
        if shown:
            parts.append(" ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        return " | ".join(parts)

    def update(
        self,
        step: int,
        images_per_s: float | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Reports that training reached `step` (absolute, not an increment)."""
        if not self._active:
            return
        step = int(step)
        if self._bar is not None:
            postfix = {}
            if images_per_s is not None:
                postfix["img/s"] = f"{to_python_scalar(images_per_s):.1f}"
            postfix.update({k: f"{v:.4g}" for k, v in self._shown_metrics(metrics).items()})
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(step - self._last_step)
            self._last_step = step
            return
        now = self._clock()
        due = self._last_line is None or now - self._last_line[0] >= self._every
        final = step >= self._total and (self._last_line is None or self._last_line[1] != step)
        if due or final:
            self._stream.write(self.format_line(step, images_per_s, metrics) + "\n")
            self._stream.flush()
            self._last_line = (now, step)
            self._excluded = 0.0
        self._last_step = step

    def exclude_time(self, seconds: float) -> None:
        """Leaves `seconds` just spent (compiling, say) out of the step rate the ETA uses.

        The plain line's rate window and the bar's (tqdm measures its rate from its last
        refresh) both shrink by `seconds`; the elapsed time still counts them.
        """
        if not self._active or seconds <= 0:
            return
        self._excluded += float(seconds)
        if self._bar is not None:
            self._bar.last_print_t += float(seconds)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""What a run records as it goes: `metrics.csv` (one row per step: step, seconds since the start,
loss and the other numbers the guidance and representation log), written and flushed every step,
TensorBoard event files under `tensorboard/` when the `tensorboard` package is installed, and
`loss.png` (loss and seconds per step against the step) when the run ends. A resumed run drops the
rows after its checkpoint, which it computes again, so no step appears twice.

`quiet()` turns off every progress bar of the process, model loading by diffusers, transformers and
huggingface_hub included (`sds3d --quiet`).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

import numpy as np

FIRST_COLUMNS = ("step", "seconds", "loss")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as numbers (empty cells left out); [] if there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(file)]


class RunMonitor:
    """`log(step, seconds, logs)` after every step (`step` counts steps done, from 1), `close()` at the end."""

    def __init__(self, out: str | Path, start_step: int = 0):
        out = Path(out)
        self.path, self.plot_path = out / "metrics.csv", out / "loss.png"
        self.rows = [row for row in read_metrics(self.path) if row.get("step", math.inf) <= start_step]
        self.columns = list(dict.fromkeys(key for row in self.rows for key in row))
        self._file = None
        self._rewrite()
        self.tensorboard = _summary_writer(out / "tensorboard", start_step)

    def _rewrite(self) -> None:
        """Writes the header and every row kept so far, and leaves the file open for appending."""
        if self._file is not None:
            self._file.close()
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, self.columns)
        if self.columns:
            self._writer.writeheader()
            self._writer.writerows(self.rows)
        self._file.flush()

    def log(self, step: int, seconds: float, logs: dict) -> None:
        row = {"step": step, "seconds": round(seconds, 4)}
        row |= {key: value if isinstance(value, int) else float(value) for key, value in logs.items() if _is_number(value)}
        self.rows.append(row)
        if set(row) - set(self.columns):  # a new column (first row, or a log that appears later)
            self.columns = [*FIRST_COLUMNS, *(k for k in dict.fromkeys([*self.columns, *row]) if k not in FIRST_COLUMNS)]
            self._rewrite()
        else:
            self._writer.writerow(row)
            self._file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, step)

    def close(self) -> Path | None:
        """Closes the files and draws loss.png; -> its path (None before the first step)."""
        self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if not self.rows:
            return None
        return plot_metrics(self.rows, self.plot_path)


def _is_number(value) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value)) and getattr(value, "ndim", 0) == 0
    except (TypeError, ValueError):
        return False


def _summary_writer(directory: Path, start_step: int):
    """A TensorBoard SummaryWriter, or None without the `tensorboard` package. A new run clears old
    event files; a resumed one purges the events after its checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    if start_step == 0:
        shutil.rmtree(directory, ignore_errors=True)
    return SummaryWriter(str(directory), purge_step=start_step + 1 if start_step else None)


def plot_metrics(rows: list[dict[str, float]], path: str | Path, width: int = 640) -> Path:
    """Two panels drawn with PIL: loss (every step in grey, a moving average in blue) and seconds per
    step, both against the step."""
    from PIL import Image, ImageDraw

    steps = np.array([row["step"] for row in rows])
    loss = np.array([row.get("loss", np.nan) for row in rows])
    seconds = np.array([row["seconds"] for row in rows])
    per_step = np.diff(seconds, prepend=0.0) / np.maximum(np.diff(steps, prepend=0.0), 1.0)
    panels = [("loss", loss, _moving_average(loss)), ("seconds per step", per_step, _moving_average(per_step))]
    height = 180
    image = Image.new("RGB", (width, height * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    for index, (title, raw, smooth) in enumerate(panels):
        _panel(draw, (0, index * height, width, (index + 1) * height), title, steps, raw, smooth)
    image.save(path)
    return Path(path)


def _moving_average(values: np.ndarray, window: int = 25) -> np.ndarray:
    """Trailing mean over the finite values among the last `window`."""
    averages = np.full(len(values), np.nan)
    for i in range(len(values)):
        recent = values[max(0, i + 1 - window):i + 1]
        recent = recent[np.isfinite(recent)]
        if len(recent):
            averages[i] = recent.mean()
    return averages


def _panel(draw, box, title, steps, raw, smooth) -> None:
    left, top, right, bottom = box
    x0, y0, x1, y1 = left + 60, top + 22, right - 12, bottom - 24
    finite = raw[np.isfinite(raw)]
    low, high = (np.percentile(finite, [1, 99]) if len(finite) else (0.0, 1.0))
    if high <= low:
        low, high = low - 1.0, high + 1.0
    first, last = steps[0], max(steps[-1], steps[0] + 1)

    def point(step, value):
        return (x0 + (step - first) / (last - first) * (x1 - x0),
                y1 - (min(max(value, low), high) - low) / (high - low) * (y1 - y0))

    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    draw.text((x0, top + 6), title, fill="black")
    draw.text((left + 4, y0), f"{high:.4g}", fill="black")
    draw.text((left + 4, y1 - 10), f"{low:.4g}", fill="black")
    draw.text((x0, y1 + 6), f"step {first:g}", fill="black")
    draw.text((x1 - 70, y1 + 6), f"step {steps[-1]:g}", fill="black")
    for values, colour, line in ((raw, (190, 190, 190), 1), (smooth, (31, 90, 200), 2)):
        points = [point(s, v) for s, v in zip(steps, values) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=line)
        elif points:
            draw.point(points, fill=colour)


def quiet() -> None:
    """No progress bars from model loading (diffusers, transformers, huggingface_hub) for the rest of
    the process; sds3d's own bars follow each command's `progress` argument."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

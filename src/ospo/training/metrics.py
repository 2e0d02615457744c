"""What a training run logs: `log.jsonl` rows (TRL's metric names), TensorBoard scalars when tensorboard is
installed, and `curves.png` drawn from the log."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ospo.artifacts import atomic_write_text, lines

log = logging.getLogger(__name__)


def _rows(path: Path) -> list[dict]:
    """The rows of a log.jsonl. A last line cut short (a kill in mid-append) is dropped, since resuming redoes its
    step; any other unreadable line is an error naming the file and line."""
    from ospo.training.data import TrainingError

    text = lines(path.read_text(encoding="utf-8", errors="replace"))
    rows = []
    for n, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no integer step")
        except ValueError as e:
            if all(not rest.strip() for rest in text[n:]):
                break
            raise TrainingError(f"{path}: line {n} is not a log row ({e}); delete the lines from {n} on to resume "
                                "from the last checkpoint") from None
        rows.append(row)
    return rows


STEP_KEYS = ("step", "epoch", "learning_rate", "grad_norm")  # what a log row holds besides the step's metrics


def final_metrics(path: Path, step: int) -> dict:
    """The metrics of step `step` as its log row holds them (without the step's bookkeeping), {} if it has none."""
    rows = [r for r in _rows(path) if r["step"] == step]
    return {k: v for k, v in rows[-1].items() if k not in STEP_KEYS} if rows else {}


class MetricLog:
    """log.jsonl rows (rank 0), TensorBoard scalars when tensorboard is installed, and curves.png."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.path, self.enabled, self.writer = out / "log.jsonl", enabled, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # rows past the checkpoint we resume from are redone
            keep = [r for r in _rows(self.path) if r["step"] <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)
        except ImportError:  # optional: log.jsonl and curves.png hold the same numbers
            log.info("tensorboard is not installed, so %s gets log.jsonl and curves.png only (pip install "
                     "'ospo[tensorboard]' adds TensorBoard scalars)", out)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.enabled and self.path.exists():
            plot_curves(self.path, self.path.parent / "curves.png")


def plot_curves(log_path: Path, out_png: Path,
                keys=("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                      "grad_norm", "logps/uncond_chosen")) -> None:
    """A small grid of line plots of the logged metrics against step (PIL only, no plotting library)."""
    from PIL import Image, ImageDraw

    rows = _rows(log_path)
    keys = [k for k in keys if any(k in r for r in rows)]
    if not rows or not keys:
        return
    w, h, pad = 320, 180, 28
    canvas = Image.new("RGB", (w * 3, h * math.ceil(len(keys) / 3)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, key in enumerate(keys):
        ox, oy = (i % 3) * w, (i // 3) * h
        pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        draw.rectangle([ox + pad, oy + pad, ox + w - 8, oy + h - pad], outline="gray")
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        sx = (w - 8 - pad - 4) / max(x1 - x0, 1)
        sy = (h - 2 * pad - 4) / (y1 - y0 if y1 > y0 else 1)
        line = [(ox + pad + 2 + (x - x0) * sx, oy + h - pad - 2 - (y - y0) * sy) for x, y in pts]
        draw.line(line if len(line) > 1 else line * 2, fill="navy", width=2)
        draw.text((ox + pad, oy + 6), f"{key}  last {ys[-1]:.4g}", fill="black")
        draw.text((ox + pad, oy + h - pad + 4), f"step {x0}..{x1}   y {y0:.3g}..{y1:.3g}", fill="gray")
    canvas.save(out_png)

"""Loss and metric curves of a run, drawn with Pillow (no matplotlib).

The trainer appends one JSON object per logging step (and per evaluation) to
``WORKDIR/metrics.jsonl``: ``{"step": int, "loss/total": float, ...}``. This module draws one panel
per group of keys (training losses, validation metrics), with axes, tick labels and a legend, and
writes ``WORKDIR/curves.png``.

    python -m hmr_jax.plot --workdir=DIR
"""

import json
import math
import os
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def read_metrics(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Key -> (steps, values) from a metrics JSONL file (non-finite values are dropped per point)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: expected one JSON object per line ({e})") from None
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    series.setdefault(key, []).append((step, float(value)))
    return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()}


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (hi > lo):
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def draw_panel(
    series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, size: tuple[int, int] = (860, 400),
    log_y: bool = True,
) -> Image.Image:
    """One plot: a line per series, x = step, y = value (log10 when all values are positive)."""
    width, height = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, 230, 30, 45  # legend in the right margin
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    if not series:
        draw.text((left, height // 2), "no data", fill=(0, 0, 0), font=font)
        return img
    log_y = log_y and all(np.all(v > 0) for _, v in series.values())
    tf = (lambda v: np.log10(v)) if log_y else (lambda v: v)
    xs = np.concatenate([s for s, _ in series.values()])
    ys = np.concatenate([tf(v) for _, v in series.values()])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1.0
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def to_px(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + (1.0 - (y - y0) / (y1 - y0)) * ph

    draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    for t in _nice_ticks(x0, x1):
        px, _ = to_px(t, y0)
        draw.line([px, top + ph, px, top + ph + 4], fill=(0, 0, 0))
        draw.text((px - 12, top + ph + 6), _fmt(t), fill=(0, 0, 0), font=font)
    for t in _nice_ticks(y0, y1):
        _, py = to_px(x0, t)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.line([left, py, left + pw, py], fill=(230, 230, 230))
        draw.text((2, py - 6), _fmt(10**t if log_y else t), fill=(0, 0, 0), font=font)
    draw.text((left + pw // 2 - 10, height - 18), "step", fill=(0, 0, 0), font=font)
    if log_y:
        draw.text((2, top - 14), "(log scale)", fill=(90, 90, 90), font=font)
    for i, (name, (steps, values)) in enumerate(sorted(series.items())):
        color = _COLORS[i % len(_COLORS)]
        pts = [to_px(float(s), float(v)) for s, v in zip(steps, tf(values))]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for px, py in pts if len(pts) <= 50 else pts[-1:]:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        # Legend, top-right, one row per series.
        ly = top + 6 + 12 * i
        draw.line([left + pw + 10, ly + 5, left + pw + 30, ly + 5], fill=color, width=3)
        draw.text((left + pw + 35, ly), name, fill=(0, 0, 0), font=font)
    return img


def _select(series: dict, prefixes: Iterable[str]) -> dict:
    return {k: v for k, v in series.items() if any(k.startswith(p) for p in prefixes)}


def plot_run(workdir: str | os.PathLike, groups: Sequence[tuple[str, tuple[str, ...]]] = (
    ("training losses", ("loss/",)), ("validation metrics", ("val/",)),
)) -> str:
    """Draw `WORKDIR/curves.png` from `WORKDIR/metrics.jsonl`; returns the PNG path."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"plot: metrics file {path!r} does not exist (written by hmr_jax.train)")
    series = read_metrics(path)
    panels = [draw_panel(_select(series, prefixes), title) for title, prefixes in groups]
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    out = os.path.join(workdir, CURVES_FILE)
    sheet.save(out)
    return out


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import flags  # pylint: disable=g-import-not-at-top

    print(plot_run(flags.FLAGS.workdir))


if __name__ == "__main__":
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
    app.run(main)

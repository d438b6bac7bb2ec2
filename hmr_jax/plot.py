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
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
# Twenty distinct colours (tab20's order: the ten strong ones first, then their light partners):
# the quickstart's loss panel alone draws eleven series, and a repeated colour makes two curves one.
_COLORS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)


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


def _dashed(
    draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color, width: int = 2, dash: float = 8.0
) -> None:
    """A polyline drawn as dashes of `dash` px (gaps of the same length)."""
    on, left = True, dash
    for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
        seg = math.hypot(xb - xa, yb - ya)
        pos = 0.0
        while pos < seg:
            step = min(left, seg - pos)
            if on:
                t0, t1 = pos / seg, (pos + step) / seg
                draw.line(
                    [xa + (xb - xa) * t0, ya + (yb - ya) * t0, xa + (xb - xa) * t1, ya + (yb - ya) * t1],
                    fill=color,
                    width=width,
                )
            pos += step
            left -= step
            if left <= 0:
                on, left = not on, dash


def draw_panel(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    size: tuple[int, int] = (860, 400),
    log_y: bool = True,
    dashed: Sequence[str] = (),
    colors: dict[str, int] | None = None,
) -> Image.Image:
    """One plot: a line per series, x = step, y = value (log10 when all values are positive).

    Series that are zero everywhere (e.g. a loss term whose weight is 0) are left out and named
    under the title. `dashed`: names drawn dashed; `colors`: name -> palette index (default: the
    sorted order).
    """
    width, height = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 70, 250, 30, 45  # legend in the right margin
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    zero = sorted(k for k, (_, v) in series.items() if v.size and np.all(v == 0))
    series = {k: v for k, v in series.items() if k not in zero and v[1].size}
    if zero:
        draw.text((left, 19), "all zero, not drawn: " + ", ".join(zero), fill=(90, 90, 90), font=font)
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
    y_ticks = _nice_ticks(y0, y1)
    if log_y and y1 - y0 < 1.0:  # less than a decade: round values, not round exponents
        y_ticks = [math.log10(t) for t in _nice_ticks(10**y0, 10**y1) if t > 0]
    for t in y_ticks:
        _, py = to_px(x0, t)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.line([left, py, left + pw, py], fill=(230, 230, 230))
        draw.text((2, py - 6), _fmt(10**t if log_y else t), fill=(0, 0, 0), font=font)
    draw.text((left + pw // 2 - 10, height - 18), "step", fill=(0, 0, 0), font=font)
    if log_y:
        draw.text((2, top - 14), "(log scale)", fill=(90, 90, 90), font=font)
    for i, (name, (steps, values)) in enumerate(sorted(series.items())):
        color = _COLORS[(colors[name] if colors and name in colors else i) % len(_COLORS)]
        pts = [to_px(float(s), float(v)) for s, v in zip(steps, tf(values))]
        if len(pts) > 1:
            if name in dashed:
                _dashed(draw, pts, color)
            else:
                draw.line(pts, fill=color, width=2)
        for px, py in pts if len(pts) <= 50 else pts[-1:]:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        # Legend, top-right, one row per series.
        ly = top + 6 + 12 * i
        if name in dashed:
            _dashed(draw, [(left + pw + 10, ly + 5), (left + pw + 30, ly + 5)], color, width=3, dash=4.0)
        else:
            draw.line([left + pw + 10, ly + 5, left + pw + 30, ly + 5], fill=color, width=3)
        draw.text((left + pw + 35, ly), name, fill=(0, 0, 0), font=font)
    return img


BASELINE = "val/mean_baseline/"
MM_METRICS = ("mpjpe", "pa_mpjpe", "pve")


def _select(series: dict, prefixes: Iterable[str]) -> dict:
    return {k: v for k, v in series.items() if any(k.startswith(p) for p in prefixes)}


def plot_run(workdir: str | os.PathLike) -> str:
    """Draw `WORKDIR/curves.png` from `WORKDIR/metrics.jsonl`; returns the PNG path.

    Panels: the training loss terms (unweighted, log scale); validation errors in mm, each
    metric solid and the mean pose/shape baseline dashed in the same colour; the vertex L2
    score (m^2, the report's metric) likewise.
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"plot: metrics file {path!r} does not exist (written by hmr_jax.train)")
    series = read_metrics(path)

    def val_panel(metrics, title):
        keys = [f"val/{m}" for m in metrics] + [BASELINE + m for m in metrics]
        sel = {k: series[k] for k in keys if k in series}
        colors = {k: i for i, m in enumerate(metrics) for k in (f"val/{m}", BASELINE + m)}
        return draw_panel(sel, title, dashed=[BASELINE + m for m in metrics], colors=colors)

    panels = [
        draw_panel(_select(series, ("loss/",)), "training losses (unweighted terms)"),
        val_panel(MM_METRICS, "validation errors, mm (dashed: predicting the mean pose and shape)"),
        val_panel(("v2v_l2",), "validation vertex L2, m^2 (dashed: mean pose and shape)"),
    ]
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

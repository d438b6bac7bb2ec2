"""Curves PNG: all-zero terms do not flatten the panel (log scale kept), baselines drawn."""

import json

import numpy as np
from PIL import Image

from hmr_jax import plot


def test_all_zero_series_is_left_out_and_named():
    steps = np.arange(0, 500, 50)
    pos = {"loss/total": (steps, 2.0 * np.exp(-steps / 300.0)), "loss/beta": (steps, 12.0 + 0 * steps)}
    with_zero = {**pos, "loss/adversarial": (steps, np.zeros(len(steps)))}
    a = np.asarray(plot.draw_panel(pos, "t"))
    b = np.asarray(plot.draw_panel(with_zero, "t"))
    # Same axes and lines (log scale kept); only the note under the title differs.
    np.testing.assert_array_equal(a[30:], b[30:])
    assert np.any(a[:30] != b[:30])


def test_plot_run_writes_three_panels(tmp_path):
    rows = [{"step": s, "loss/total": 1.0 / (1 + s), "loss/adversarial": 0.0} for s in range(0, 300, 50)]
    rows += [
        {
            "step": s,
            "val/mpjpe": 150.0 - s / 10,
            "val/mean_baseline/mpjpe": 190.0,
            "val/v2v_l2": 0.05,
            "val/mean_baseline/v2v_l2": 0.07,
        }
        for s in (100, 200, 300)
    ]
    (tmp_path / plot.METRICS_FILE).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = plot.plot_run(tmp_path)
    with Image.open(out) as im:
        assert im.size == (860, 3 * 400)
        px = np.asarray(im.convert("RGB"))
    # The validation panel holds the metric's colour (palette entry 0) in solid and dashed lines.
    assert np.sum(np.all(px[400:800] == plot._COLORS[0], axis=-1)) > 100


def test_eleven_series_get_eleven_colours():
    """The quickstart's loss panel draws 11 terms: the 11th must not reuse the 1st's colour."""
    steps = np.arange(0, 500, 50)
    series = {f"loss/t{i:02d}": (steps, (i + 1) * np.exp(-steps / 300.0)) for i in range(11)}
    assert len(set(plot._COLORS)) == len(plot._COLORS) >= 11
    px = np.asarray(plot.draw_panel(series, "t"))
    for colour in plot._COLORS[:11]:
        assert np.sum(np.all(px == colour, axis=-1)) > 50, colour

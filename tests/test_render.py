"""Tests for hmr_jax.render (numpy software rasteriser and drawing helpers)."""

import numpy as np
import pytest

from hmr_jax import render


def _pixel_mesh(xy, z=1.0):
    """Vertices at pixel coords (x, y) when rendered with focal=1, center=0 at depth z."""
    xy = np.asarray(xy, np.float64)
    return np.concatenate([xy * z, np.full((len(xy), 1), z)], axis=1)


def _quad(x0, y0, x1, y1, z):
    v = _pixel_mesh([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], z)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def _uv_sphere(n_lat=40, n_lon=40, radius=1.0):
    theta = np.linspace(0, np.pi, n_lat + 1)
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    v = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_lat), np.arange(n_lon), indexing="ij")
    a = i * n_lon + j
    b = i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    f = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return v * radius, f  # degenerate pole triangles are harmless


def test_single_triangle_covers_expected_pixels():
    v = _pixel_mesh([[0.3, 0.3], [20.3, 0.3], [0.3, 20.3]])
    res = render.render_mesh(v, np.array([[0, 1, 2]]), 1.0, (0.0, 0.0), (32, 40))
    yy, xx = np.mgrid[0:32, 0:40]
    expected = (xx >= 1) & (yy >= 1) & (xx + yy <= 20)  # centres inside x+y <= 20.6
    np.testing.assert_array_equal(res.mask, expected)
    assert abs(res.mask.sum() - 200) / 200 < 0.06  # ~ triangle area
    np.testing.assert_allclose(res.depth[expected], 1.0, rtol=1e-5)
    assert np.isinf(res.depth[~expected]).all()
    assert res.image.dtype == np.uint8 and res.image.shape == (32, 40, 3)
    assert (res.image[~expected] == 0).all() and (res.image[expected] > 0).all()


def test_winding_does_not_matter():
    v = _pixel_mesh([[2.2, 3.1], [25.7, 9.4], [8.9, 28.3]])
    a = render.render_mesh(v, np.array([[0, 1, 2]]), 1.0, (0, 0), (32, 32))
    b = render.render_mesh(v, np.array([[0, 2, 1]]), 1.0, (0, 0), (32, 32))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.image, b.image)  # two-sided lighting


@pytest.mark.parametrize("near_first", [True, False])
def test_zbuffer_nearer_wins_regardless_of_order(near_first):
    # Same pixel footprint (focal=1 scaled by depth), overlapping region x in [10, 20].
    v_near, f_near = _quad(5.2, 5.2, 20.2, 20.2, 2.0)
    v_far, f_far = _quad(10.2, 10.2, 28.2, 28.2, 5.0)
    red, blue = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    parts = [(v_near, f_near, red), (v_far, f_far, blue)]
    if not near_first:
        parts = parts[::-1]
    verts = np.concatenate([parts[0][0], parts[1][0]])
    faces = np.concatenate([parts[0][1], parts[1][1] + 4])
    cols = np.concatenate([np.tile(parts[0][2], (4, 1)), np.tile(parts[1][2], (4, 1))])
    res = render.render_mesh(verts, faces, 1.0, (0, 0), (32, 32), vertex_colors=cols, ambient=1.0)
    overlap = res.image[11:21, 11:21]
    assert (overlap[..., 0] == 255).all() and (overlap[..., 2] == 0).all()
    np.testing.assert_allclose(res.depth[11:21, 11:21], 2.0, rtol=1e-5)
    assert (res.image[22:28, 22:28, 2] == 255).all()
    np.testing.assert_allclose(res.depth[22:28, 22:28], 5.0, rtol=1e-5)


def test_depth_fronto_parallel_and_slanted_plane():
    f, c, size = 100.0, (31.5, 31.5), (64, 64)
    # Fronto-parallel plane at Z = 2.5 filling the view.
    v = np.array([[-2, -2, 2.5], [2, -2, 2.5], [2, 2, 2.5], [-2, 2, 2.5]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    res = render.render_mesh(v, faces, f, c, size)
    assert res.mask.all()
    np.testing.assert_allclose(res.depth, 2.5, rtol=1e-5)
    # Slanted plane Z = 3 + Y: perspective-correct depth along the rows.
    ys = np.array([-1.0, -1.0, 1.0, 1.0])
    v = np.stack([np.array([-3, 3, 3, -3.0]), ys, 3 + ys], -1)
    res = render.render_mesh(v, faces, f, c, size)
    rows = np.arange(size[0])[:, None]
    expected = 3.0 / (1.0 - (rows - c[1]) / f)  # ray Y = (y - cy) / f * Z with Z = 3 + Y
    expected = np.broadcast_to(expected, size)
    m = res.mask
    assert m[:56].all() and not m[57:].any()  # bottom edge Y = 1, Z = 4 -> row 56.5
    np.testing.assert_allclose(res.depth[m], expected[m], rtol=1e-4)


@pytest.mark.parametrize("ssaa", [1, 2])
def test_sphere_silhouette_area_matches_projection(ssaa):
    radius, dist, f = 0.5, 3.0, 300.0
    v, faces = _uv_sphere(60, 60, radius)
    v = v + np.array([0, 0, dist])
    res = render.render_mesh(v, faces, f, (63.5, 63.5), (128, 128), ssaa=ssaa)
    r_img = f * radius / np.sqrt(dist**2 - radius**2)  # tangent cone silhouette
    area = np.pi * r_img**2
    assert abs(res.mask.sum() - area) / area < 0.02
    assert abs(res.alpha.sum() - area) / area < 0.02
    assert np.isinf(res.depth[~res.mask]).all()
    d = res.depth[64, 64]
    assert abs(d - (dist - radius)) < 0.01
    # Lambert with a headlight: the centre is brighter than the rim.
    assert res.image[64, 64].sum() > res.image[64, int(63.5 + 0.95 * r_img)].sum()
    if ssaa > 1:
        assert ((res.alpha > 0) & (res.alpha < 1)).any()


def test_large_triangles_close_up():
    v, faces = _quad(-500.0, -400.0, 900.0, 800.0, 0.5)
    res = render.render_mesh(v, faces, 1.0, (0, 0), (300, 400))
    assert res.mask.all()
    np.testing.assert_allclose(res.depth, 0.5, rtol=1e-5)


def test_empty_scene_leaves_background():
    bg = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    v = np.zeros((0, 3))
    res = render.render_mesh(v, np.zeros((0, 3), np.int32), 50.0, (16, 12), (24, 32), background=bg)
    np.testing.assert_array_equal(res.image, bg)
    assert not res.mask.any() and np.isinf(res.depth).all()
    # Off-screen geometry also leaves the background untouched.
    v, faces = _quad(100.0, 100.0, 200.0, 200.0, 1.0)
    res = render.render_mesh(v, faces, 1.0, (0, 0), (24, 32), background=bg)
    np.testing.assert_array_equal(res.image, bg)


def test_faces_behind_camera_are_ignored():
    # Behind the camera (Z < 0) the projection flips into view; such faces must be culled.
    v, faces = _quad(-10.0, -10.0, -2.0, -2.0, -1.0)
    res = render.render_mesh(v, faces, 1.0, (0, 0), (16, 16))
    assert not res.mask.any()
    # A triangle straddling the near plane is culled; an ordinary one next to it is kept.
    v = np.array([[1, 1, 1.0], [10, 1, -1.0], [1, 10, 1.0], [2, 2, 1.0], [12, 2, 1.0], [2, 12, 1.0]])
    res = render.render_mesh(v, np.array([[0, 1, 2], [3, 4, 5]]), 1.0, (0, 0), (16, 16))
    assert res.mask.sum() == (12 - 2 + 1) * (12 - 2 + 2) // 2  # only the second triangle


def test_overlay_blends_only_covered_pixels():
    img = np.full((32, 32, 3), 100, np.uint8)
    v, faces = _quad(8.2, 8.2, 20.2, 20.2, 1.0)
    res = render.render_mesh(v, faces, 1.0, (0, 0), (32, 32), color=(1, 1, 1), ambient=1.0)
    out = render.overlay(img, res, alpha=0.5)
    assert (out[~res.mask] == 100).all()
    assert (out[res.mask] == 178).all()  # 0.5 * 100 + 0.5 * 255 = 177.5
    np.testing.assert_array_equal(render.overlay(img, res, alpha=0.0), img)


def test_draw_keypoints_and_box():
    img = np.zeros((40, 40, 3), np.uint8)
    kp = np.array([[5, 5, 1], [30, 5, 1], [20, 30, 0]], np.float64)
    out = render.draw_keypoints(img, kp, [-1, 0, 0], radius=1, color=(255, 0, 0), bone_color=(0, 255, 0))
    assert (img == 0).all()  # input untouched
    np.testing.assert_array_equal(out[5, 5], [255, 0, 0])
    np.testing.assert_array_equal(out[5, 30], [255, 0, 0])
    np.testing.assert_array_equal(out[5, 17], [0, 255, 0])  # bone between joints 0 and 1
    assert (out[25:36, 15:26] == 0).all()  # invisible joint and its bone not drawn
    out = render.draw_keypoints(img, kp[:, :2], edges=[[0, 2]], radius=0)
    np.testing.assert_array_equal(out[30, 20], [255, 0, 0])
    box = render.draw_box(img, 2, 3, 12, 20, color=(0, 0, 255))
    np.testing.assert_array_equal(box[3, 7], [0, 0, 255])
    np.testing.assert_array_equal(box[10, 12], [0, 0, 255])
    assert (box[5:18, 4:11] == 0).all()


def test_contact_sheet_and_save_png(tmp_path):
    from PIL import Image

    ims = [np.full((10, 12, 3), i * 40, np.uint8) for i in range(5)]
    sheet = render.contact_sheet(ims, cols=3, pad=2)
    assert sheet.shape == (2 * 10 + 3 * 2, 3 * 12 + 4 * 2, 3)
    np.testing.assert_array_equal(sheet[2 + 10 + 2 : 2 + 20 + 2, 2 + 12 + 2 : 2 + 24 + 2], ims[4])
    path = tmp_path / "sub" / "sheet.png"
    render.save_png(path, sheet)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), sheet)
    with pytest.raises(ValueError, match="uint8"):
        render.save_png(path, sheet.astype(np.float32))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="vertices"):
        render.render_mesh(np.zeros((3, 2)), np.array([[0, 1, 2]]), 1.0, (0, 0), (8, 8))
    with pytest.raises(ValueError, match="faces"):
        render.render_mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]), 1.0, (0, 0), (8, 8))
    with pytest.raises(ValueError, match="background"):
        render.render_mesh(
            np.zeros((3, 3)), np.array([[0, 1, 2]]), 1.0, (0, 0), (8, 8), background=np.zeros((8, 9, 3), np.uint8)
        )


def test_cull_backfaces_keeps_visible_surface():
    v, faces = _uv_sphere(30, 30, 0.5)  # outward (counter-clockwise) winding
    v = v + np.array([0, 0, 3.0])
    args = (faces, 200.0, (31.5, 31.5), (64, 64))
    full = render.render_mesh(v, *args)
    culled = render.render_mesh(v, *args, cull_backfaces=True)
    np.testing.assert_array_equal(full.mask, culled.mask)
    np.testing.assert_allclose(full.depth[full.mask], culled.depth[full.mask], rtol=1e-5)
    inside_out = render.render_mesh(v, faces[:, ::-1], *args[1:], cull_backfaces=True)
    assert inside_out.depth[32, 32] > 3.4  # only the far hemisphere is left


def test_side_view_turns_about_vertical_axis():
    # A thin slab, wide in x and shallow in z: narrow from the side, same height.
    v = np.array([[x, y, 3 + z] for x in (-0.5, 0.5) for y in (-0.3, 0.3) for z in (-0.05, 0.05)])
    faces = np.array(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    args = (faces, 100.0, (31.5, 31.5), (64, 64))
    front = render.render_mesh(v, *args)
    side = render.side_view(v, *args)
    assert front.mask.any(axis=0).sum() > 3 * side.mask.any(axis=0).sum()
    assert abs(side.mask.any(axis=1).sum() - 100 * 0.6 / 2.5) <= 1  # near end: 0.6 m at 2.5 m
    assert abs(np.nanmin(side.depth) - 2.5) < 0.05  # the slab's right end now faces the camera

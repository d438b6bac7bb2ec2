"""hmr_jax.predict: the CLI on 2 good images + 1 corrupt file over a tiny run; crops; image errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hmr_jax import body_model, geometry, inference, skeleton, smpl, steps
from hmr_jax import images as images_lib
from hmr_jax import state as state_lib


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, trained_workdir, cache_env, repo):
    workdir = trained_workdir["workdir"]
    inputs = tmp_path_factory.mktemp("inputs")
    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    a = os.path.join(inputs, "person.jpg")
    Image.open(src).save(a)
    b = os.path.join(inputs, "wide.png")  # non-square: padded to a square crop
    Image.open(src).resize((48, 32)).save(b)
    bad = os.path.join(inputs, "corrupt.jpg")
    with open(src, "rb") as f:
        head = f.read(200)
    with open(bad, "wb") as f:
        f.write(head)  # a truncated JPEG
    out = str(tmp_path_factory.mktemp("out"))
    env = {**os.environ, **cache_env()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hmr_jax.predict",
            f"--workdir={workdir}",
            "--images",
            a,
            b,
            bad,
            f"--out={out}",
            "--checkpoint=latest",
            "--batch-size=4",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(repo),
        timeout=300,
    )
    return dict(proc=proc, out=out, a=a, b=b, bad=bad)


@pytest.mark.slow
def test_cli_outputs_for_good_images_and_error_for_corrupt(cli_run):
    proc, out = cli_run["proc"], cli_run["out"]
    assert proc.returncode == 1, proc.stderr[-3000:]  # one image failed
    assert "corrupt.jpg" in proc.stderr and "corrupt or truncated" in proc.stderr, proc.stderr[-3000:]
    assert "2 image(s) done, 1 failed" in proc.stdout
    n_vertices = smpl.load(body_model.default_body_model_path()).num_vertices
    for stem in ("person", "wide"):
        with open(os.path.join(out, f"{stem}.json")) as f:
            (rec,) = json.load(f)["people"]  # the whole image: one person
        assert len(rec["pose"]) == 72 and len(rec["betas"]) == 10 and len(rec["cam"]) == 3
        assert len(rec["translation"]) == 3 and rec["translation"][2] > 0
        assert np.all(np.isfinite(rec["pose"] + rec["betas"] + rec["cam"] + rec["translation"]))
        kp = np.asarray(rec["keypoints_2d_image_px"])  # the tiny config has a keypoint head
        assert kp.shape == (24, 2) and np.all(np.isfinite(kp))
        with open(os.path.join(out, f"{stem}_0.obj")) as f:
            lines = f.read().splitlines()
        assert sum(line.startswith("v ") for line in lines) == n_vertices
        png = np.asarray(Image.open(os.path.join(out, f"{stem}_overlay.png")))
        assert png.ndim == 3 and png.shape[1] > 2 * png.shape[0]  # image | overlay | side view
    with open(os.path.join(out, "wide.json")) as f:
        wide = json.load(f)
    assert wide["checkpoint_step"] == 3
    crop_box = wide["people"][0]["crop_box"]
    assert crop_box == {**crop_box, "x": 0.0, "y": -8.0, "side": 48.0}
    with open(os.path.join(out, "predictions.json")) as f:
        summary = json.load(f)
    assert len(summary["done"]) == 2
    assert [x["image"] for x in summary["failed"]] == [cli_run["bad"]]
    assert not os.path.exists(os.path.join(out, "corrupt.json"))


def test_crop_matches_the_box():
    img = np.zeros((20, 40, 3), np.uint8)
    img[5:15, 10:20] = 255  # a white square
    cx, cy, side = images_lib.crop_box(img.shape[:2], bbox=(10, 5, 10, 10), bbox_scale=1.0)
    assert (cx, cy, side) == (15.0, 10.0, 10.0)
    out = images_lib.crop(img, cx, cy, side, 10)
    np.testing.assert_array_equal(out, 255)  # exactly the square
    whole = images_lib.crop(img, *images_lib.crop_box(img.shape[:2]), 40)
    assert whole.shape == (40, 40, 3)
    assert whole[:10].max() == 0 and whole[30:].max() == 0  # black padding above and below
    np.testing.assert_array_equal(whole[15:25, 10:20], 255)
    with pytest.raises(ValueError, match="--bbox"):
        images_lib.parse_bbox("1,2,3")
    with pytest.raises(ValueError, match="--bbox"):
        images_lib.parse_bbox("1,2,0,4")
    assert images_lib.parse_bbox("1, 2, 3, 4") == (1.0, 2.0, 3.0, 4.0)


def test_load_image_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 48)).save(big)
    with pytest.raises(images_lib.ImageError, match="empty file"):
        images_lib.load_image(str(empty))
    with pytest.raises(images_lib.ImageError, match="Pillow can decode|corrupt"):
        images_lib.load_image(str(text))
    with pytest.raises(images_lib.ImageError, match="no such file"):
        images_lib.load_image(str(tmp_path / "missing.jpg"))
    with pytest.raises(images_lib.ImageError, match=r"64x48 px .* over the 0.001 MP limit"):
        images_lib.load_image(str(big), max_megapixels=0.001)
    assert images_lib.load_image(str(big)).shape == (48, 64, 3)
    images, errors = images_lib.list_images([str(tmp_path)])
    assert sorted(os.path.basename(p) for p in images) == ["big.png", "empty.jpg", "notes.png"]
    (tmp_path / "sub").mkdir()
    images, errors = images_lib.list_images([str(tmp_path / "sub")])
    assert images == [] and "no image files" in errors[0][1]


def test_load_image_decodes_every_format_as_training_does(tmp_path):
    """Grayscale (8 and 16 bit), palette, RGBA PNGs and grayscale / CMYK JPEGs come out as the
    uint8 RGB that the training pipeline's tf.io.decode_image(channels=3) gives for the same file;
    an EXIF orientation tag is applied (training data carry none)."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    gray16 = (rng.integers(0, 65536, (24, 32))).astype(np.uint16)
    yy, xx = np.mgrid[:24, :32]  # a smooth image for the JPEGs (on noise, chroma upsampling differs)
    smooth = np.stack([xx * 7, yy * 9, 255 - xx * 4 - yy * 3], -1).astype(np.uint8)
    images = {
        "gray8.png": Image.fromarray(rgb[..., 0]),
        "gray16.png": Image.fromarray(gray16),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
        "gray.jpg": Image.fromarray(rgb[..., 1]),
        "rgb.jpg": Image.fromarray(smooth),
        "cmyk.jpg": Image.fromarray(smooth).convert("CMYK"),
    }
    for name, im in images.items():
        path = tmp_path / name
        im.save(path)
        ours = images_lib.load_image(str(path))
        theirs = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False).numpy()
        assert ours.dtype == np.uint8 and ours.shape == (24, 32, 3), name
        # JPEG: TensorFlow's default IDCT is the fast integer one (dct_method ''), Pillow's the
        # accurate one: a few levels apart. PNGs are exact.
        tol = 4 if name.endswith(".jpg") else 0
        np.testing.assert_allclose(ours.astype(int), theirs.astype(int), atol=tol, err_msg=name)
    assert images_lib.load_image(str(tmp_path / "gray16.png")).max() > 250  # not clipped to white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 deg clockwise
    Image.fromarray(rgb).save(tmp_path / "exif6.png", exif=exif)
    np.testing.assert_array_equal(images_lib.load_image(str(tmp_path / "exif6.png")), np.rot90(rgb, k=-1))


def test_keypoints_map_back_to_the_image_pixels_they_came_from():
    """A bright pixel found in the crop at normalised (x, y) maps back to its own image pixel."""
    size = 16
    img = np.zeros((40, 50, 3), np.uint8)
    for u, v in ((20, 11), (14, 7), (29, 22)):
        img[:] = 0
        img[v, u] = 255
        box = (22.0, 15.0, float(size))  # edge coordinates: crop = image [14, 30) x [7, 23), 1:1
        c = images_lib.crop(img, *box, size)
        j, i = np.unravel_index(np.argmax(c[..., 0]), c.shape[:2])
        xy_norm = 2.0 * np.array([[i, j]], np.float64) / size - 1.0  # crop px -> normalised (training keypoints)
        np.testing.assert_allclose(inference.crop_to_image_px(xy_norm, box, size), [[u, v]], atol=1e-9)
    # the crop's centre is the principal point written in the JSON
    cx, cy, side = 30.5, 12.25, 37.0
    np.testing.assert_allclose(
        inference.crop_to_image_px(np.zeros((1, 2)), (cx, cy, side), 96),
        [[cx + 0.5 * side / 96 - 0.5, cy + 0.5 * side / 96 - 0.5]],
    )


def test_overlay_camera_matches_the_weak_perspective_projection():
    """The mesh drawn at the predicted camera covers the joints projected the way the 2D loss does."""
    model = smpl.load(body_model.default_body_model_path())
    pose = np.zeros((1, 72), np.float32)
    pose[0, 0] = np.pi  # upright, facing the camera
    pose[0, 16 * 3 + 2], pose[0, 17 * 3 + 2] = -1.0, 1.0  # arms down a little
    betas = np.zeros((1, 10), np.float32)
    cam = np.array([[0.8, 0.15, 0.1]], np.float32)
    size, display = 32, 96
    focal = 5000.0 * size / 224.0
    transl = geometry.weak_perspective_to_translation(cam, focal, size)
    body = smpl.forward(model, betas, pose, transl=transl)
    raw = smpl.forward(model, betas, pose).joints  # the loss projects joints without translation
    xy = (np.asarray(geometry.weak_perspective_project(raw, cam))[0] + 1.0) * display / 2.0  # (24, 2) px
    result = inference.render_front(
        np.asarray(body.vertices[0]), np.asarray(model.faces), focal * display / size, display
    )
    for j in (0, 3, 6, 9, 12, 15, 1, 2):  # pelvis, spine, neck, head, hips
        x, y = np.round(xy[j]).astype(int)
        assert result.mask[y, x], (skeleton.SMPL24_NAMES[j], x, y)
    ys, xs = np.nonzero(result.mask)
    assert abs(xs.mean() - xy[[0, 3, 6, 9]].mean(0)[0]) < 3.0  # horizontally centred on the spine


def test_predict_fn_with_flip_test_returns_the_averaged_body(tmp_path, tiny_config):
    """config eval.flip_test: pose, betas, camera and mesh from the flip test's average; the keypoints
    stay the crop's own (predict does not know the joint set's left/right pairs)."""
    import functools

    import jax

    from hmr_jax.models import hmr

    config = tiny_config(tmp_path)
    models = state_lib.make_static_parts(config)
    state = jax.jit(functools.partial(state_lib.init_state, config, models))(jax.random.PRNGKey(0))
    body = smpl.load(body_model.default_body_model_path())
    size = config.data.img_size
    images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    plain = jax.jit(steps.make_predict(config, models))(state, images, body)
    config.eval.flip_test = True
    flip = jax.jit(steps.make_predict(config, models))(state, images, body)
    avg = hmr.apply_generator_flip_test(models.gen, state.gen_params, state.gen_batch_stats, images)
    np.testing.assert_allclose(flip["betas"], avg["betas"], atol=1e-5)
    np.testing.assert_allclose(flip["cam"], avg["cam"], atol=1e-5)
    np.testing.assert_allclose(
        geometry.axis_angle_to_matrix(np.asarray(flip["pose"]).reshape(2, 24, 3)), avg["pose_rotmat"], atol=1e-4
    )
    np.testing.assert_allclose(flip["keypoints_2d"], plain["keypoints_2d"], atol=1e-6)
    assert not np.allclose(flip["vertices"], plain["vertices"], atol=1e-5)

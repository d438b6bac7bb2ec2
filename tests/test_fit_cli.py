"""`python -m hmr_jax.fit`: SMPLify on every person of every image, from OpenPose JSON.

Bodies of known pose are projected (their OpenPose BODY_25 points, `fitting.keypoints_3d`) with
the full image's camera into OpenPose files for blank images; the CLI runs in subprocesses (its
flags share names with predict's and train's, so it is not imported here)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hmr_jax import body_model, fit_images, geometry, inference, smpl
from hmr_jax.fitting import keypoint_body, keypoints_3d

WIDTH, HEIGHT = 320, 240
# One compiled fit for every run here: the same batch size and steps (enough for a few pixels).
FIT_ARGS = ("--batch-size=4", "--config.stage1_steps=60", "--config.stage2_steps=120")


def _bodies(xs, seed=0):
    """People of known pose standing side by side at x (metres), 70 m from the camera (about 150 px
    tall in a 320 x 240 image with its default focal length): (pose, transl, (P, 25, 3) keypoints)."""
    rng = np.random.default_rng(seed)
    n = len(xs)
    pose = np.zeros((n, 72), np.float32)
    pose[:, 0] = np.pi  # facing the camera
    pose[:, 3:] = rng.normal(0.0, 0.15, (n, 69))
    transl = np.stack([np.asarray(xs, np.float32), np.full(n, 0.1), np.full(n, 70.0)], -1).astype(np.float32)
    kb = keypoint_body(smpl.load(body_model.default_body_model_path()))
    points = keypoints_3d(kb, np.zeros((n, 10), np.float32), pose, transl)
    focal, center = inference.full_camera((HEIGHT, WIDTH), None, None)
    uv = np.asarray(geometry.perspective_project(points, focal, np.float32(center)))
    return pose, transl, np.concatenate([uv, np.full((n, 25, 1), 0.9)], -1)


def _openpose(keypoints, coco18=False):
    if coco18:  # OpenPose 1.0: 18 COCO points, BODY_25's without mid-hip, toes and heels
        return {
            "version": 1.0,
            "people": [{"pose_keypoints": kp[list(fit_images.COCO18_TO_BODY25)].ravel().tolist()} for kp in keypoints],
        }
    return {"version": 1.2, "people": [{"pose_keypoints_2d": kp.ravel().tolist()} for kp in keypoints]}


def _photos(root, files):
    """Blank images and their OpenPose files: {stem: JSON object or text}."""
    images, kp = root / "images", root / "openpose"
    images.mkdir()
    kp.mkdir()
    for stem, content in files.items():
        Image.new("RGB", (WIDTH, HEIGHT), (90, 110, 130)).save(images / f"{stem}.png")
        text = content if isinstance(content, str) else json.dumps(content)
        (kp / f"{stem}_keypoints.json").write_text(text)
    return images, kp


def _fit(repo, env, *args, timeout=300):
    cmd = [sys.executable, "-m", "hmr_jax.fit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(repo), timeout=timeout)


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_coco18_points_take_their_body25_places():
    coco = np.arange(54, dtype=np.float64).reshape(18, 3) + 1.0
    kp, kind = fit_images.body25(coco, "x.json#0")
    assert kind == "COCO-18" and kp.shape == (25, 3)
    names = fit_images.kp_lib.OPENPOSE25_NAMES
    assert np.array_equal(kp[names.index("left_knee")], coco[12])  # COCO-18's 12 is the left knee
    assert np.array_equal(kp[names.index("right_hip")], coco[8])
    absent = ("mid_hip", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe")
    assert all(kp[names.index(n), 2] == 0 for n in (*absent, "right_heel"))
    with pytest.raises(ValueError, match=r"x.json#0: expected OpenPose BODY_25 .* found 15"):
        fit_images.body25(np.ones((15, 3)), "x.json#0")


def test_fits_every_person_and_reports_a_bad_file(tmp_path, repo, cache_env):
    """Two known bodies (BODY_25) in one image, one (COCO-18) in another, a corrupt JSON for a third:
    the fits land within a few pixels of the keypoints, the bad image alone fails (status 1)."""
    _, transl, two = _bodies([-0.7, 0.7])
    _, _, one = _bodies([0.0], seed=1)
    images, kp = _photos(tmp_path, {"two": _openpose(two), "coco": _openpose(one, coco18=True), "bad": "{not json"})
    out = tmp_path / "out"
    proc = _fit(
        repo, {**os.environ, **cache_env()}, "--images", str(images), f"--keypoints={kp}", f"--out={out}", *FIT_ARGS
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "bad.png" in proc.stderr and "not valid JSON" in proc.stderr

    rec = _read(out / "two.json")
    assert rec["camera_image_px"]["focal_length"] == pytest.approx(5000 / 256 * WIDTH)
    assert rec["camera_image_px"]["principal_point"] == [(WIDTH - 1) / 2, (HEIGHT - 1) / 2]
    assert [p["source"] for p in rec["people"]] == ["openpose:two_keypoints.json#0", "openpose:two_keypoints.json#1"]
    for i, p in enumerate(rec["people"]):
        assert p["start"] == "mean" and p["keypoints_format"] == "BODY_25" and "regressor_error_px" not in p
        assert len(p["pose"]) == 72 and len(p["betas"]) == 10
        assert p["error_px"] < 4.0 < p["start_error_px"], p
        np.testing.assert_allclose(
            np.linalg.norm(np.asarray(p["keypoints_2d_image_px"]) - two[i, :, :2], axis=-1).mean(),
            p["error_px"],
            rtol=1e-3,
        )
        assert p["translation"][2] == pytest.approx(transl[i, 2], rel=0.15)
        assert np.isfinite([p["loss"], p["reprojection_loss"]]).all()
        v = np.loadtxt([line[2:] for line in open(out / f"two_{i}.obj") if line.startswith("v ")])
        assert v.shape == (smpl.load(body_model.default_body_model_path()).num_vertices, 3)
        assert abs(v[:, 0].mean() - transl[i, 0]) < 0.15  # each mesh where its person stands
    png = np.asarray(Image.open(out / "two_overlay.png"))
    assert png.shape[0] >= HEIGHT + 4 and png.shape[1] == 3 * WIDTH + 8  # image | people | side view
    assert not np.array_equal(png[2 : 2 + HEIGHT, 2 : 2 + WIDTH], png[2 : 2 + HEIGHT, 4 + WIDTH : 4 + 2 * WIDTH])

    (coco,) = _read(out / "coco.json")["people"]
    assert coco["keypoints_format"] == "COCO-18" and coco["error_px"] < 4.0

    summary = _read(out / "fits.json")
    assert [os.path.basename(r["image"]) for r in summary["done"]] == ["coco.png", "two.png"]
    assert [os.path.basename(f["image"]) for f in summary["failed"]] == ["bad.png"]
    assert summary["people"] == 3 and summary["people_per_second"] > 0 and summary["start"] == "mean"
    assert summary["fit_config"]["stage2_steps"] == 120 and summary["batch_size"] == 4


def test_usage_errors_are_one_line_and_status_2(tmp_path, repo, cache_env):
    env = {**os.environ, **cache_env()}
    images, kp = _photos(tmp_path, {"a": _openpose(_bodies([0.0])[2])})
    out = f"--out={tmp_path / 'out'}"
    for args, message in (
        (
            ("--images", str(images), f"--keypoints={kp}", out, "--config.stage2_step=3"),
            "Did you mean: config.stage2_steps",
        ),
        (("--images", str(images), f"--keypoints={kp}", out, "--config.optimizer=sgd"), "optimizer"),
        (("--images", str(images), f"--keypoints={tmp_path / 'nowhere'}", out), "no such file or folder"),
    ):
        proc = _fit(repo, env, *args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, (args, proc.stderr[-2000:])


@pytest.mark.slow
def test_workdir_starts_from_the_regressor(tmp_path, repo, cache_env, trained_workdir):
    """With --workdir the run's predictions (kept in OUT/regressor) start the fit, and each person
    records the regressor's pixel error beside the fit's."""
    _, _, two = _bodies([-0.7, 0.7])
    images, kp = _photos(tmp_path, {"two": _openpose(two)})
    out = tmp_path / "out"
    args = ("--images", str(images), f"--keypoints={kp}", f"--out={out}", "--checkpoint=latest", *FIT_ARGS)
    proc = _fit(repo, {**os.environ, **cache_env()}, f"--workdir={trained_workdir['workdir']}", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec, reg = _read(out / "two.json"), _read(out / "regressor" / "two.json")
    kb = keypoint_body(smpl.load(body_model.default_body_model_path()))
    focal, center = inference.full_camera((HEIGHT, WIDTH), None, None)
    for p, r in zip(rec["people"], reg["people"], strict=True):
        assert p["start"] == "regressor" and p["source"] == r["source"]
        # the regressor's error, from its own JSON: the start was its pose, shape and translation
        start = keypoints_3d(kb, np.float32([r["betas"]]), np.float32([r["pose"]]), np.float32([r["translation"]]))
        uv = np.asarray(geometry.perspective_project(start, focal, np.float32(center)))[0]
        expected = np.linalg.norm(uv - two[rec["people"].index(p), :, :2], axis=-1).mean()
        assert p["regressor_error_px"] == pytest.approx(expected, rel=1e-3) == p["start_error_px"]
        assert p["error_px"] < p["regressor_error_px"]
    summary = _read(out / "fits.json")
    assert summary["start"] == "regressor" and summary["regressor"]["checkpoint"]["step"] == 3
    assert os.path.isfile(out / "regressor" / "two_overlay.png")

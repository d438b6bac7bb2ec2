"""predict / evaluate at the edges: boxes past or outside the image, crops of mostly padding, an
image named like the summary, an unusable --out, and a run's config.json edited after training."""

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from hmr_jax import body_model, config_checks, evaluation, inference, render, smpl, trainer
from hmr_jax import images as images_lib
from hmr_jax import workdir as workdir_lib

# --------------------------------------------------------------------------------- boxes and crops


def test_a_box_past_the_image_is_clipped_and_the_crop_stays_small():
    img = np.full((480, 640, 3), 200, np.uint8)
    cx, cy, side = images_lib.crop_box(img.shape[:2], bbox=(0, 0, 20000, 20000), bbox_scale=1.2)
    assert (cx, cy, side) == (320.0, 240.0, pytest.approx(640 * 1.2))  # the box clipped to the image
    assert images_lib.clip_bbox(img.shape[:2], (0, 0, 20000, 20000)) == ((0.0, 0.0, 640.0, 480.0), True)
    assert images_lib.clip_bbox(img.shape[:2], (10, 20, 30, 40)) == ((10.0, 20.0, 30.0, 40.0), False)
    # crop() itself: a square far larger than the image (was PIL's DecompressionBombError)
    t0 = time.time()
    out = images_lib.crop(img, 320.0, 240.0, 60000.0, 32)
    assert out.shape == (32, 32, 3) and out.max() > 0 and time.time() - t0 < 5.0
    np.testing.assert_array_equal(out[0], 0)  # padding around the image
    assert images_lib.crop(img, 1e7, 1e7, 100.0, 16).max() == 0  # nowhere near the image: black


def test_crop_matches_resampling_the_whole_padded_square():
    """The windowed crop gives the same pixels (within 1 level of rounding) as resizing the whole
    zero-padded square, for squares inside, across and mostly outside the image."""
    rng = np.random.default_rng(0)
    worst = 0
    for _ in range(200):
        h, w = rng.integers(5, 80, 2)
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        side = float(rng.uniform(2, 3 * max(h, w)))
        cx, cy = rng.uniform(-side / 2, w + side / 2), rng.uniform(-side / 2, h + side / 2)
        size = int(rng.choice([8, 16, 32, 50]))
        x0, y0 = cx - side / 2, cy - side / 2
        xi0, yi0 = int(np.floor(x0)), int(np.floor(y0))
        window = Image.fromarray(img).crop((xi0, yi0, int(np.ceil(x0 + side)), int(np.ceil(y0 + side))))
        box = (x0 - xi0, y0 - yi0, x0 - xi0 + side, y0 - yi0 + side)
        ref = np.asarray(window.resize((size, size), Image.BILINEAR, box=box)).astype(int)
        worst = max(worst, np.abs(ref - images_lib.crop(img, cx, cy, side, size).astype(int)).max())
    assert worst <= 1


def test_a_box_outside_the_image_or_a_crop_of_padding_is_refused():
    with pytest.raises(ValueError, match=r"--bbox 700,10,50,50 lies outside the 640x480 px image"):
        images_lib.crop_box((480, 640), bbox=(700, 10, 50, 50))
    with pytest.raises(ValueError, match=r"outside"):
        images_lib.crop_box((480, 640), bbox=(-100, -100, 100, 100))  # touching the corner only
    # a 400x3 strip: the whole-image square is 0.75% image
    with pytest.raises(ValueError, match=r"holds 0.75% image pixels .* at least 1%"):
        images_lib.crop_box((3, 400))
    # a box whose enlarged square is almost all padding
    with pytest.raises(ValueError, match=r"holds 0.75% image pixels .*, --bbox\)"):
        images_lib.crop_box((3, 400), bbox=(0, 0, 400, 3), bbox_scale=1.0)
    with pytest.raises(ValueError, match=r"image pixels"):
        images_lib.crop_box((480, 640), bbox=(300, 200, 10, 10), bbox_scale=1000.0)
    assert images_lib.crop_box((4, 400)) == (200.0, 2.0, 400.0)  # 1%: accepted
    assert images_lib.image_share((4, 400), 200.0, 2.0, 400.0) == pytest.approx(0.01)


# ---------------------------------------------------------------------------------- output names


def test_no_image_takes_the_summary_name_or_another_image_name():
    used: set[str] = set()
    names = [
        inference.unique_stem(p, used)
        for p in ("x/predictions.jpg", "y/Predictions.png", "a.jpg", "b/A.png", "c/a.jpg", "a_1.png")
    ]
    assert names == ["predictions_1", "Predictions_2", "a", "A_1", "a_2", "a_1_1"]
    assert len({n.lower() for n in names}) == len(names)
    assert os.path.splitext(inference.SUMMARY_NAME)[0] not in {n.lower() for n in names}


# ------------------------------------------------------------------------------------- --out checks


def test_output_folder_checked(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"--out .*file.txt.*: expected a folder, found a file"):
        inference.check_output_dir(str(a_file))
    with pytest.raises(ValueError, match=r"cannot create a folder under .*file.txt.*, which is a file"):
        inference.check_output_dir(str(a_file / "sub" / "out"))
    with pytest.raises(ValueError, match=r"--out '/proc/.*': expected a writable folder"):
        inference.check_output_dir("/proc/hmr_jax_out")  # not writable, even as root
    made = inference.check_output_dir(str(tmp_path / "new" / "out"))
    assert os.path.isdir(made) and os.listdir(made) == []  # the probe file is gone
    with pytest.raises(ValueError, match=r"--out .*: expected a file path, found a folder"):
        evaluation.check_output_file(str(tmp_path))
    with pytest.raises(ValueError, match=r"which is a file"):
        evaluation.check_output_file(str(a_file / "report.json"))
    with pytest.raises(ValueError, match=r"cannot write in '/proc'"):
        evaluation.check_output_file("/proc/report.json")


def test_bad_out_fails_before_the_model_loads(trained_workdir, tmp_path, monkeypatch):
    def no_restore(*args, **kwargs):
        raise AssertionError("the checkpoint was restored before --out was checked")

    monkeypatch.setattr(workdir_lib, "restore_checkpoint", no_restore)
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32)).save(img)
    with pytest.raises(ValueError, match=r"--out .*taken.*: expected a folder, found a file"):
        inference.predict(trained_workdir["workdir"], [str(img)], str(a_file), progress=False)
    with pytest.raises(ValueError, match=r"--out .*which is a file"):
        evaluation.evaluate(trained_workdir["workdir"], out_path=str(a_file / "r.json"), progress=False)


# ------------------------------------------------------------------------ predict end to end (in process)


def test_predict_clips_refuses_per_file_and_keeps_the_summary(trained_workdir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    Image.open(src).save(inputs / "predictions.jpg")  # the summary's name
    Image.open(src).resize((400, 3)).save(inputs / "strip.png")  # clipped box, enlarged 1.2x: 0.52% image
    out = tmp_path / "out"
    logs: list[str] = []
    summary = inference.predict(
        trained_workdir["workdir"],
        [str(inputs)],
        str(out),
        bbox=(0, 0, 20000, 20000),
        checkpoint="latest",
        batch_size=2,
        progress=False,
        log=logs.append,
    )
    assert [os.path.basename(r["json"]) for r in summary["done"]] == ["predictions_1.json"]
    assert [(os.path.basename(f["image"]), f["error"].split(" holds ")[1][:21]) for f in summary["failed"]] == [
        ("strip.png", "0.52% image pixels (t")
    ]
    assert any("note:" in m and "--bbox clipped to the 32x32 px image" in m for m in logs), logs
    assert any("error:" in m and "strip.png" in m for m in logs), logs
    with open(out / inference.SUMMARY_NAME) as f:
        saved = json.load(f)
    assert len(saved["done"]) == 1 and len(saved["failed"]) == 1  # the summary, not an image's record
    with open(out / "predictions_1.json") as f:
        rec = json.load(f)
    assert rec["people"][0]["crop_box"]["side"] == pytest.approx(32 * images_lib.DEFAULT_BBOX_SCALE)
    assert not (out / "strip.json").exists()


# ------------------------------------------------------------------------------- run config checks


def _edit_config(workdir, key, value):
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        config = json.load(f)
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    old, node[leaf] = node[leaf], value
    with open(path, "w") as f:
        json.dump(config, f)
    return old


@pytest.mark.parametrize("stage", ["evaluate", "predict"])
def test_an_invalid_edit_of_config_json_is_one_line_naming_key_and_file(trained_workdir, tmp_path, stage):
    old = _edit_config(trained_workdir["workdir"], "data.img_size", 8)
    try:
        path = os.path.join(trained_workdir["workdir"], "config.json")
        with pytest.raises(config_checks.ConfigError) as info:
            if stage == "evaluate":
                evaluation.evaluate(trained_workdir["workdir"], progress=False)
            else:
                inference.predict(trained_workdir["workdir"], [str(tmp_path)], str(tmp_path / "out"), progress=False)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: config 'data.img_size'"), message
        assert "found 8" in message
        assert not (tmp_path / "out").exists()  # nothing written
    finally:
        _edit_config(trained_workdir["workdir"], "data.img_size", old)


def test_a_valid_edit_of_config_json_is_reported(trained_workdir):
    workdir = trained_workdir["workdir"]
    assert config_checks.check_run_config(workdir_lib.load_run_config(workdir), workdir, "evaluate") == []
    old = _edit_config(workdir, "model.n_iter", 4)
    try:
        config = workdir_lib.load_run_config(workdir)
        for stage in ("evaluate", "predict"):
            assert config_checks.check_run_config(config, workdir, stage) == [f"model.n_iter: {old!r} -> 4"]
    finally:
        _edit_config(workdir, "model.n_iter", old)


def test_the_config_json_that_training_writes_passes(tmp_path, tiny_data, tiny_config):
    """A real (2-step) run: config.json holds the resolved mean parameters, lists for tuples, and
    file paths only training reads; evaluate's and predict's checks accept it as written."""
    data = tiny_data
    prior = tmp_path / "prior.npz"
    rng = np.random.default_rng(0)
    np.savez(prior, pose=rng.normal(size=(8, 72)) * 0.1, shape=rng.normal(size=(8, 10)))
    config = tiny_config(
        data,
        **{
            "train.num_steps": 2,
            "train.eval_every": 2,
            "train.checkpoint_every": 0,
            "adversarial.prior_file": str(prior),
        },
    )
    workdir = str(tmp_path / "wd")
    trainer.train_and_evaluate(config, workdir)
    written = workdir_lib.load_run_config(workdir)
    assert len(written.model.mean_pose) == 72
    os.remove(prior)  # gone since training: evaluate / predict do not read it
    for stage in ("evaluate", "predict"):
        assert config_checks.check_run_config(written, workdir, stage) == []
    with pytest.raises(config_checks.ConfigError, match="adversarial.prior_file"):
        config_checks.validate_config(written)  # training would read it


# ------------------------------------------------------------------ predict on images at the size extremes

# name -> (width, height) of the image, (width, height) of the overlay PNG: three panels, each cell as
# large as the largest (`inference.display_size`: longer side in [256, 1024]; `side_view_size`).
EXTREMES = {
    "one.png": ((1, 1), (776, 260)),
    "three_by_five.png": ((3, 5), (776, 260)),
    "small.png": ((16, 9), (776, 260)),
    "wide.png": ((8000, 40), (3080, 516)),
    "tall.png": ((40, 8000), (1544, 1028)),
    "large.jpg": ((6000, 4000), (3080, 687)),
}
OUTSIDE = "lies outside the {} px image (expected a box overlapping"


def _openpose(*corners):
    """One OpenPose 1.2 person per (x0, y0, x1, y1): two confident keypoints at those corners."""
    people = [{"pose_keypoints_2d": [x0, y0, 0.9, x1, y1, 0.9] + [0.0] * 69} for x0, y0, x1, y1 in corners]
    return {"version": 1.2, "people": people}


@pytest.fixture(scope="module")
def extreme_runs(trained_workdir, tmp_path_factory):
    """predict over the images of `EXTREMES` four times: the whole image, a --bbox, a boxes JSON and
    OpenPose files, whose boxes reach far outside the images or lie wholly outside them."""
    from hmr_jax import people

    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    src = Image.open(src).convert("RGB")
    d = tmp_path_factory.mktemp("extremes")
    images = d / "images"
    images.mkdir()
    for name, ((w, h), _) in EXTREMES.items():
        src.resize((w, h), Image.BILINEAR).save(images / name)
    boxes = d / "boxes.json"
    boxes.write_text(
        json.dumps(
            {
                "one.png": [[-1e4, -1e4, 2e4, 2e4, 0.9]],
                "three_by_five.png": [[10, 10, 5, 5]],
                "small.png": [[-100, -200, 400, 600], [50, 50, 5, 5]],
                "wide.png": [[100, 0, 40, 40], [9000, 0, 40, 40]],
                "tall.png": [[0, 3000, 40, 100]],
                "large.jpg": [[2000, 1000, 1000, 2500]],
            }
        )
    )
    kp = d / "keypoints"
    kp.mkdir()  # no file for tall.png
    for stem, corners in {
        "one": [(-300, -300, 300, 300)],
        "three_by_five": [(40, 40, 60, 90)],
        "small": [(-50, -20, 10, 30), (100, 100, 120, 140)],
        "wide": [(3000, -500, 3030, 500)],
        "large": [(2500, 1000, 3100, 3600)],
    }.items():
        (kp / f"{stem}_keypoints.json").write_text(json.dumps(_openpose(*corners)))
    runs = {}
    for key, kwargs in {
        "whole": {},
        "bbox": {"bbox": (-5, 20, 30, 30)},
        "boxes": {"finder": people.PeopleFinder(boxes=str(boxes))},
        "keypoints": {"finder": people.PeopleFinder(keypoints=str(kp))},
    }.items():
        logs: list[str] = []
        t0 = time.time()
        summary = inference.predict(
            trained_workdir["workdir"],
            [str(images)],
            str(d / key),
            checkpoint="latest",
            batch_size=2,
            progress=False,
            log=logs.append,
            **kwargs,
        )
        runs[key] = dict(summary=summary, logs=logs, seconds=time.time() - t0)
    return runs


def _walk_numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk_numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk_numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x


def _check_outputs(rec, size):
    """An image's outputs: JSON of finite numbers in the image's own pixels, an .obj per person whose
    perspective projection lands where the crop's weak-perspective camera puts it, and an overlay
    PNG of the expected size."""
    name = os.path.basename(rec["image"])
    (w, h), png_wh = EXTREMES[name]
    with open(rec["json"]) as f:
        saved = json.load(f)
    assert all(np.isfinite(v) for v in _walk_numbers(saved)), name
    assert saved["image_size"] == {"width": w, "height": h}
    f, p = saved["camera_image_px"]["focal_length"], np.asarray(saved["camera_image_px"]["principal_point"])
    assert f == pytest.approx(5000 / 256 * max(w, h)) and np.allclose(p, [(w - 1) / 2, (h - 1) / 2])
    for person in saved["people"]:
        cb = person["crop_box"]
        box = (cb["x"] + cb["side"] / 2, cb["y"] + cb["side"] / 2, cb["side"])
        if "box" in person:  # the crop: around the box clipped to the image, in the image's pixels
            (x, y, bw, bh), _ = images_lib.clip_bbox((h, w), person["box"])
            assert box == pytest.approx((x + bw / 2, y + bh / 2, max(bw, bh) * images_lib.DEFAULT_BBOX_SCALE))
        v = np.loadtxt([line[2:] for line in open(person["obj"]) if line.startswith("v ")])
        t = np.asarray(person["translation"])
        s = person["cam"][0]
        weak = inference.crop_to_image_px(s * (v - t + person["translation_crop"])[:, :2], box, size)
        persp = f * v[:, :2] / v[:, 2:] + p
        z = np.abs(v[:, 2] - t[2]).max()
        assert np.abs(persp - weak).max() <= np.abs(weak - p).max() * z / (t[2] - z) + 1e-6 * cb["side"], name
        joints = np.asarray(person["joints_2d_image_px"])  # inside the body's image, in image pixels
        assert np.all(joints >= weak.min(0) - 1e-3 * cb["side"]) and np.all(joints <= weak.max(0) + 1e-3 * cb["side"])
    png = Image.open(saved["overlay"])
    assert png.size == png_wh, name
    return saved, np.asarray(png)


def test_whole_image_at_the_size_extremes(extreme_runs):
    """A 1x1, 3x5 or 16x9 image and a 6000x4000 JPEG are predicted; an 8000x40 or 40x8000 strip,
    whose square crop would be 0.5% image, fails alone with one line naming the file."""
    run = extreme_runs["whole"]
    size = run["summary"]["done"][0]["img_size"]
    done = {os.path.basename(r["image"]): r for r in run["summary"]["done"]}
    assert sorted(done) == ["large.jpg", "one.png", "small.png", "three_by_five.png"]
    for rec in done.values():
        _check_outputs(rec, size)
    failed = {os.path.basename(f["image"]): f["error"] for f in run["summary"]["failed"]}
    assert sorted(failed) == ["tall.png", "wide.png"]
    for name, error in failed.items():
        assert "holds 0.5% image pixels" in error and "give the person's box" in error, error
        (line,) = [m for m in run["logs"] if name in m]
        assert line.startswith("error: ") and line.endswith(error) and "\n" not in line
    one = done["one.png"]["people"][0]
    assert one["crop_box"] == {**one["crop_box"], "x": 0.0, "y": 0.0, "side": 1.0}
    # the 1x1 image shown enlarged (nearest neighbour): its panel is one colour
    _, png = _check_outputs(done["one.png"], size)
    pixel = np.asarray(Image.open(done["one.png"]["image"]).convert("RGB"))[0, 0]
    assert np.all(png[2:258, 2:258] == pixel)
    # the large image shown at 1024x683, its people drawn at the same scale
    large, png = _check_outputs(done["large.jpg"], size)
    assert large["people"][0]["crop_box"] == {"x": 0.0, "y": -1000.0, "side": 6000.0}
    shown = np.asarray(Image.open(done["large.jpg"]["image"]).resize((1024, 683), Image.BILINEAR))
    assert np.abs(png[2:685, 2:1026].astype(int) - shown).mean() < 1.0


def test_a_bbox_reaching_past_the_extremes_is_clipped_and_one_outside_fails_that_image(extreme_runs):
    run = extreme_runs["bbox"]  # -5,20,30,30: past the three large images' edges, beyond the small ones
    size = run["summary"]["done"][0]["img_size"]
    done = {os.path.basename(r["image"]): r for r in run["summary"]["done"]}
    assert sorted(done) == ["large.jpg", "tall.png", "wide.png"]
    for name, rec in done.items():
        saved, _ = _check_outputs(rec, size)
        (w, h), _ = EXTREMES[name]
        clipped = (25, min(50, h) - 20)  # x, w clipped at 0; y from 20 to 50 or the image's bottom
        cb = saved["people"][0]["crop_box"]
        assert cb["side"] == pytest.approx(max(clipped) * images_lib.DEFAULT_BBOX_SCALE)
        assert (cb["x"] + cb["side"] / 2, cb["y"] + cb["side"] / 2) == pytest.approx((12.5, 20 + clipped[1] / 2))
        (note,) = [m for m in run["logs"] if name in m]
        assert note.startswith(f"note: {rec['image']}: --bbox clipped to the {w}x{h} px image: 0,20,25,{clipped[1]}")
    failed = {os.path.basename(f["image"]): f["error"] for f in run["summary"]["failed"]}
    assert failed == {
        "one.png": "--bbox -5,20,30,30 " + OUTSIDE.format("1x1") + " [0, 1] x [0, 1])",
        "three_by_five.png": "--bbox -5,20,30,30 " + OUTSIDE.format("3x5") + " [0, 3] x [0, 5])",
        "small.png": "--bbox -5,20,30,30 " + OUTSIDE.format("16x9") + " [0, 16] x [0, 9])",
    }
    for name, error in failed.items():
        assert [m for m in run["logs"] if name in m] == [
            f"error: {os.path.join(os.path.dirname(rec['image']), name)}: {error}"
        ]


def test_people_boxes_far_outside_the_extremes_are_clipped_or_refused_per_person(extreme_runs):
    for key in ("boxes", "keypoints"):
        run = extreme_runs[key]
        size = run["summary"]["done"][0]["img_size"]
        done = {os.path.basename(r["image"]): r for r in run["summary"]["done"]}
        assert sorted(done) == sorted(
            ["large.jpg", "one.png", "small.png", "wide.png"] + ["tall.png"] * (key == "boxes")
        )
        for rec in done.values():
            _check_outputs(rec, size)
        # a box wholly outside the image: that person refused, with why; the image's others go on
        (small,) = done["small.png"]["people"]
        (why,) = done["small.png"]["skipped_people"]
        assert why.endswith(OUTSIDE.format("16x9") + " [0, 16] x [0, 9])"), why
        assert f": box {'50,50,5,5' if key == 'boxes' else '100,100,20,40'} lies outside" in why, why
        assert any(m.startswith("note: ") and "small.png: person skipped" in m and why in m for m in run["logs"])
        assert len(done["wide.png"]["people"]) == 1  # boxes: [9000, 0, 40, 40] refused
        # a box reaching past the image: clipped to it, and said so
        assert any("one.png: person" in m and "box clipped to the 1x1 px image: 0,0,1,1" in m for m in run["logs"])
        assert done["one.png"]["people"][0]["crop_box"]["side"] == pytest.approx(1.2)
        failed = {os.path.basename(f["image"]): f["error"] for f in run["summary"]["failed"]}
        assert failed["three_by_five.png"].startswith("no person left: ")
        assert OUTSIDE.format("3x5") in failed["three_by_five.png"]
        for name in failed:
            assert sum(m.startswith("error: ") and name in m for m in run["logs"]) == 1
    (large,) = [r for r in extreme_runs["keypoints"]["summary"]["done"] if r["image"].endswith("large.jpg")]
    assert large["people"][0]["box"] == [2500.0, 1000.0, 600.0, 2600.0]  # the keypoints' box, image pixels
    failed = {os.path.basename(f["image"]): f["error"] for f in extreme_runs["keypoints"]["summary"]["failed"]}
    assert "no file for tall.png" in failed["tall.png"]


# ----------------------------------------------------------------- the side view of people at different depths


def _side_view_rows(png, side_hw):
    """The rows of an overlay PNG's side view (the third of three cells, 2 px apart) that person 0
    (`render.PERSON_COLORS`: blue) and person 1 (orange) cover, and the panel itself."""
    sh, sw = side_hw
    cw = (png.shape[1] - 8) // 3
    panel = png[2 : 2 + sh, 2 + 2 * (cw + 2) :][:, :sw].astype(int)
    blue, orange = panel[..., 2] - panel[..., 0] > 8, panel[..., 0] - panel[..., 2] > 8
    return [np.flatnonzero(m.any(1)) for m in (blue, orange)], [np.flatnonzero(m.any(0)) for m in (blue, orange)], panel


def _dashed(panel):
    """Columns of the side view holding the dashed line of a shortened gap (`render.BREAK_COLOR`)."""
    return np.flatnonzero((np.all(panel == render.BREAK_COLOR, axis=-1)).sum(0) > panel.shape[0] // 4)


def test_side_view_frames_people_at_very_different_depths(trained_workdir, tmp_path):
    """Two people whose full-frame depths differ by more than 2x (a large box and a small one): the
    side view shows each over at least 40% of its height, the near one on the left, the stretch
    of depth between them shortened at a dashed line."""
    from hmr_jax import people

    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    Image.open(src).convert("RGB").resize((240, 180)).save(tmp_path / "two.png")
    (tmp_path / "boxes.json").write_text(json.dumps({"two.png": [[20, 10, 100, 160], [160, 60, 30, 50]]}))
    summary = inference.predict(
        trained_workdir["workdir"],
        [str(tmp_path / "two.png")],
        str(tmp_path / "out"),
        checkpoint="latest",
        progress=False,
        finder=people.PeopleFinder(boxes=str(tmp_path / "boxes.json")),
        log=lambda msg: None,
    )
    (rec,) = summary["done"]
    near, far = (p["translation"][2] for p in rec["people"])
    assert far > 2 * near
    side_hw = inference.side_view_size(inference.display_size((180, 240)))
    assert side_hw == (256, 256)
    rows, cols, panel = _side_view_rows(np.asarray(Image.open(rec["overlay"]).convert("RGB")), side_hw)
    for r in rows:
        assert len(r) and np.ptp(r) + 1 >= 0.4 * side_hw[0], [np.ptp(r) + 1 for r in rows]
    assert cols[0].max() < cols[1].min()  # near left, far right, apart
    (dash,) = _dashed(panel)
    assert cols[0].max() < dash < cols[1].min()


def test_side_view_layout_shortens_only_gaps_that_would_shrink_people():
    """`render.render_people` with the mean body at depths 3x apart, one above the other and 0.3 m
    apart: each spans at least half the side view's height; only the first two get dashed lines."""
    model = smpl.load(body_model.default_body_model_path())
    pose = np.zeros((1, 72), np.float32)
    pose[0, 0] = np.pi  # upright, facing the camera
    body = np.asarray(smpl.forward(model, np.zeros((1, 10), np.float32), pose).vertices[0], np.float64)
    faces = np.asarray(model.faces)
    image = np.full((300, 400, 3), 90, np.uint8)
    focal, centre = 5000.0 / 256 * 400, (199.5, 149.5)
    cases = {
        "depths 20 m and 60 m": ([-0.4, 0.0, 20.0], [3.0, 0.5, 60.0], 1),
        "one 8 m above the other": ([0.0, 0.0, 30.0], [0.3, -8.0, 31.0], 0),
        "0.3 m apart in depth": ([-0.4, 0.0, 20.0], [0.4, 0.0, 20.6], None),
    }
    for what, (t0, t1, axis) in cases.items():
        png = render.render_people([body + t0, body + t1], faces, focal, centre, image)
        rows, cols, panel = _side_view_rows(png, (300, 400))
        heights = [np.ptp(r) + 1 for r in rows]
        assert min(heights) >= 0.5 * 300 if axis != 0 else min(heights) >= 0.35 * 300, (what, heights)
        dashed_cols = _dashed(panel)
        dashed_rows = np.flatnonzero(np.all(panel == render.BREAK_COLOR, axis=-1).sum(1) > 100)
        assert (len(dashed_cols), len(dashed_rows)) == {1: (1, 0), 0: (0, 1), None: (0, 0)}[axis], what
        if axis is None:  # not shortened: 0.3 m between the bodies' depth extents, drawn to scale
            gap = cols[1].min() - cols[0].max()
            depth = np.ptp(body[:, 2])
            px_per_m = (cols[1].max() - cols[0].min()) / (0.6 + depth)
            assert gap == pytest.approx((0.6 - depth) * px_per_m, abs=3), (gap, depth)

"""People in photos: boxes from OpenPose / boxes / COCO detections JSON, the full-image camera,
and predict on several people per image (one batch, one overlay)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hmr_jax import body_model, geometry, inference, people, smpl
from hmr_jax import images as images_lib

# The formats of real files (akanazawa/hmr data/random_keypoints.json, OpenPose 1.0 COCO-18;
# nkolot/SPIN examples/im1010_openpose.json, OpenPose 1.2 BODY_25; examples/im1010_bbox.json),
# numbers shortened to the points that matter.
OPENPOSE_10 = {
    "version": 1.0,
    "people": [
        {
            "pose_keypoints": [0, 0, 0, 447.67, 204.633, 0.83, 484.783, 208.334, 0.80, 559.023, 171.282, 0.88]
            + [629.549, 141.459, 0.90, 406.876, 200.91, 0.84, 328.93, 180.519, 0.82, 260.36, 156.342, 0.91]
            + [469.953, 358.601, 0.60, 484.794, 468.108, 0.81, 481.169, 586.828, 0.85, 419.844, 354.921, 0.60]
            + [408.663, 469.937, 0.84, 393.798, 583.159, 0.82, 0, 0, 0, 0, 0, 0, 468.193, 169.35, 0.96]
            + [423.692, 169.29, 1.0],
            "face_keypoints": [],
        },
        {
            "pose_keypoints": [0, 0, 0, 622.155, 473.702, 0.83, 662.997, 477.378, 0.82, 675.948, 544.232, 0.9]
            + [688.918, 599.876, 0.9, 583.142, 470.025, 0.87, 557.164, 542.346, 0.98, 540.53, 590.628, 0.8]
            + [642.52, 592.435, 0.77, 0, 0, 0, 0, 0, 0, 586.929, 588.756, 0.75, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            + [0, 0, 0, 642.523, 423.609, 0.82, 599.886, 425.426, 0.75],
        },
    ],
}
BODY25 = [66.4171, 47.0342, 0.614349, 78.5691, 57.8892, 0.628322, 74.1715, 57.8883, 0.568593, 0, 0, 0, 0, 0, 0]
BODY25 += [82.9632, 58.1474, 0.69, 87.8742, 80.3805, 0.70, 77.7917, 97.9535, 0.77, 77.7931, 96.9218, 0.59]
BODY25 += [71.5884, 96.9234, 0.57, 53.2337, 120.705, 0.68, 35.916, 151.465, 0.63, 84.5121, 96.9231, 0.56]
BODY25 += [98.2142, 129.75, 0.62, 118.893, 155.601, 0.70, 65.3889, 44.6995, 0.12635, 67.4553, 44.1846, 0.62]
BODY25 += [0, 0, 0, 73.9174, 42.636, 0.77, 111.14, 160.512, 0.56, 114.242, 160.771, 0.53, 123.032, 158.188, 0.59]
BODY25 += [25.3161, 149.915, 0.44, 26.6083, 149.657, 0.42, 34.8817, 157.153, 0.49]
OPENPOSE_12 = {"version": 1.2, "people": [{"pose_keypoints_2d": BODY25, "face_keypoints_2d": []}]}
SPIN_BBOX = {"bbox": [17, 37, 117, 142]}


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_openpose_boxes_from_confident_keypoints(tmp_path):
    assert len(BODY25) == 75
    found = people.read_openpose(_write(tmp_path / "im1010_keypoints.json", OPENPOSE_12))
    (p,) = found.people
    kp = np.asarray(BODY25).reshape(25, 3)
    good = kp[kp[:, 2] > 0.2]  # the 0.126 nose-eye point and the zeros are left out
    assert len(good) == 21
    np.testing.assert_allclose(p.box, [25.3161, 42.636, 123.032 - 25.3161, 160.771 - 42.636])
    two = people.read_openpose(_write(tmp_path / "random_keypoints.json", OPENPOSE_10))
    assert [q.source for q in two.people] == ["openpose:random_keypoints.json#0", "openpose:random_keypoints.json#1"]
    x, y, w, h = two.people[0].box
    assert (x, y, x + w, y + h) == pytest.approx((260.36, 141.459, 629.549, 586.828))
    # the crop: a square around the box, 1.2 x its longer side
    cx, cy, side = images_lib.crop_box((700, 800), two.people[0].box)
    assert (cx, cy, side) == pytest.approx((x + w / 2, y + h / 2, 1.2 * max(w, h)))


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ({"people": []}, "names no person"),
        ([1, 2], "expected OpenPose JSON"),
        ({"people": [{"face_keypoints": []}]}, r"people\[0\]: expected 'pose_keypoints_2d'"),
        ({"people": [{"pose_keypoints_2d": [1, 2, 0.9, 4]}]}, "75 for BODY_25"),
        ({"people": [{"pose_keypoints_2d": [1, 2, 0.9] + [0] * 72}]}, "names no person.*fewer than 2 keypoints"),
    ],
)
def test_malformed_openpose_is_an_error_naming_the_file(tmp_path, content, match):
    path = _write(tmp_path / "bad_keypoints.json", content)
    with pytest.raises(people.PeopleError, match=match) as e:
        people.read_openpose(path)
    assert str(e.value).startswith(path)


def test_boxes_files_in_every_form(tmp_path):
    img = "/photos/im1010.jpg"
    (p,) = people.BoxesFile(_write(tmp_path / "im1010_bbox.json", SPIN_BBOX)).find(img).people
    assert p.box == (17.0, 37.0, 117.0, 142.0)
    by_name = {"im1010.jpg": [[1, 2, 30, 40], [5, 6, 70, 80, 0.3], {"bbox": [9, 9, 10, 10], "score": 0.9}]}
    found = people.BoxesFile(_write(tmp_path / "b.json", by_name), min_score=0.5).find(img)
    assert [q.box for q in found.people] == [(1, 2, 30, 40), (9, 9, 10, 10)]
    assert len(found.skipped) == 1 and "score 0.3 < --min-score 0.5" in found.skipped[0]
    coco = [
        {"image_id": 1010, "bbox": [1, 2, 3, 4], "score": 0.99, "category_id": 1},
        {"image_id": 1010, "bbox": [1, 2, 3, 4], "score": 0.99, "category_id": 3},  # a car
        {"file_name": "000000001010.jpg", "bbox": [5, 5, 5, 5], "score": 0.6, "category_id": 1},
        {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.99, "category_id": 1},
    ]
    dets = people.BoxesFile(_write(tmp_path / "dets.json", coco), min_score=0.5)
    found = dets.find("/x/000000001010.jpg").people  # by file name, then by id
    assert sorted((q.box, q.score) for q in found) == [((1, 2, 3, 4), 0.99), ((5, 5, 5, 5), 0.6)]
    with pytest.raises(people.PeopleError, match=r"dets.json: names no person for 8.jpg"):
        dets.find("/x/8.jpg")
    with pytest.raises(
        people.PeopleError, match=r"names no person for im1010.jpg with score >= --min-score 0.5 .1 below"
    ):
        people.BoxesFile(_write(tmp_path / "low.json", {"im1010": [[5, 6, 70, 80, 0.3]]})).find(img)
    for bad, match in (
        ("[", "not valid JSON"),
        ({"a.jpg": [[1, 2, 0, 4]]}, r"\['a.jpg'\]\[0\]: expected a box"),
        ([{"bbox": [1, 2, 3, 4]}], r"\[0\]: expected a detection"),
        (3, "expected boxes JSON"),
    ):
        with pytest.raises(people.PeopleError, match=match):
            people.BoxesFile(_write(tmp_path / "bad.json", bad))


def test_folders_find_each_images_file(tmp_path):
    (tmp_path / "kp").mkdir()
    _write(tmp_path / "kp" / "im1010_keypoints.json", OPENPOSE_12)
    _write(tmp_path / "kp" / "random.json", OPENPOSE_10)
    finder = people.PeopleFinder(keypoints=str(tmp_path / "kp"))
    assert len(finder.find("/a/im1010.jpg").people) == 1 and len(finder.find("/a/random.png").people) == 2
    with pytest.raises(people.PeopleError, match=r"--keypoints .*kp: no file for other.jpg .*other_keypoints.json"):
        finder.find("/a/other.jpg")
    (tmp_path / "bx").mkdir()
    _write(tmp_path / "bx" / "im1010_bbox.json", SPIN_BBOX)
    assert people.PeopleFinder(boxes=str(tmp_path / "bx")).find("/a/im1010.jpg").people[0].box[2] == 117.0
    with pytest.raises(ValueError, match="expected one of them"):
        people.PeopleFinder(keypoints=str(tmp_path / "kp"), boxes=str(tmp_path / "bx"))
    with pytest.raises(ValueError, match="--boxes .*nope.json: no such file"):
        people.PeopleFinder(boxes=str(tmp_path / "nope.json"))


@pytest.mark.parametrize("focal", [1e9, None])
def test_full_frame_camera_sees_what_the_crop_camera_sees(focal):
    """The posed body's joints projected with the full image's camera land where the crop
    prediction's 2D joints (weak perspective, mapped back to image pixels) do: within 1e-3 px
    relative in the weak-perspective limit (a far camera), and within the depth error otherwise."""
    model = smpl.load(body_model.default_body_model_path())
    pose = np.zeros((1, 72), np.float32)
    pose[0, 0] = np.pi
    pose[0, 16 * 3 + 2], pose[0, 17 * 3 + 2] = -1.0, 1.0
    cam = np.array([0.85, 0.12, -0.07])
    image_hw, size, box = (480, 640), 32, (470.25, 130.5, 150.0)  # a box right of and above the centre
    f_crop = 5000.0 * size / 224.0
    t_crop = np.asarray(geometry.weak_perspective_to_translation(cam, f_crop, size))
    joints = np.float64(smpl.forward(model, np.zeros((1, 10), np.float32), pose, transl=t_crop[None]).joints[0])
    crop_2d = inference.crop_to_image_px(cam[0] * joints[:, :2], box, size)  # (24, 2) image px
    focal, pp = inference.full_camera(image_hw, focal, None)
    assert pp == (319.5, 239.5)
    centre = inference.crop_to_image_px(np.zeros((1, 2)), box, size)[0]
    t = inference.full_frame_translation(cam, centre, box[2], focal, pp)
    full = joints - t_crop + t  # the body in the full image's camera
    weak = focal * full[:, :2] / t[2] + pp  # the formula: exact at depth t_z
    np.testing.assert_allclose(weak, crop_2d, rtol=0, atol=1e-5)  # float32 joints
    persp = focal * full[:, :2] / full[:, 2:] + pp  # the pinhole camera (float64)
    err = np.abs(persp - crop_2d).max()
    if focal > 1e8:
        assert err < 1e-3 * box[2]
    else:  # 4D-Humans' default: off by (u - p) z / t_z, z the joint's depth about the root
        assert focal == pytest.approx(5000 / 256 * 640)
        z = np.abs(full[:, 2] - t[2]).max()
        assert err <= np.abs(crop_2d - pp).max() * z / (t[2] - z) + 1e-6
    # signs: a box right of and above the image centre puts the body right (+x) and up (-y)
    assert t[0] > cam[1] and t[1] < cam[2]


@pytest.fixture(scope="module")
def two_people_run(trained_workdir, tmp_path_factory):
    """Two people (OpenPose 1.0 JSON) and one (BODY_25) over a tiny run."""
    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    d = tmp_path_factory.mktemp("photos")
    Image.open(src).convert("RGB").resize((800, 700)).save(d / "random photo é.jpg")
    Image.open(src).convert("RGB").resize((160, 190)).save(d / "im1010.jpg")
    Image.open(src).convert("RGB").resize((64, 64)).save(d / "nobody.jpg")
    kp = d / "kp"
    kp.mkdir()
    _write(kp / "random photo é_keypoints.json", OPENPOSE_10)
    _write(kp / "im1010_keypoints.json", OPENPOSE_12)
    _write(kp / "nobody_keypoints.json", {"version": 1.2, "people": []})
    out = tmp_path_factory.mktemp("out")
    calls = []
    summary = inference.predict(
        trained_workdir["workdir"],
        [str(d)],
        str(out),
        checkpoint="latest",
        batch_size=2,
        progress=False,
        finder=people.PeopleFinder(keypoints=str(kp)),
        log=calls.append,
    )
    return dict(summary=summary, out=out, log=calls)


@pytest.mark.slow
def test_predict_every_person_with_full_frame_results(two_people_run):
    summary, out = two_people_run["summary"], two_people_run["out"]
    (bad,) = summary["failed"]
    assert bad["image"].endswith("nobody.jpg") and "nobody_keypoints.json: names no person" in bad["error"]
    recs = {os.path.basename(r["image"]): r for r in summary["done"]}
    assert sorted(recs) == ["im1010.jpg", "random photo é.jpg"]
    rec = recs["random photo é.jpg"]
    assert len(rec["people"]) == 2 and rec["camera_image_px"]["focal_length"] == pytest.approx(5000 / 256 * 800)
    for i, p in enumerate(rec["people"]):
        assert p["source"] == f"openpose:random photo é_keypoints.json#{i}"
        assert len(p["pose"]) == 72 and np.asarray(p["pose_rotmat"]).shape == (24, 3, 3)
        np.testing.assert_allclose(
            geometry.axis_angle_to_matrix(np.float32(p["pose"]).reshape(24, 3)), p["pose_rotmat"], atol=1e-5
        )
        assert len(p["betas"]) == 10 and len(p["cam"]) == 3 and p["translation"][2] > 0
        assert np.asarray(p["joints_2d_image_px"]).shape == (24, 2)
        assert np.asarray(p["keypoints_2d_image_px"]).shape == (24, 2)
        assert os.path.isfile(p["obj"]) and p["obj"].endswith(f"random photo é_{i}.obj")
        # the .obj is the mesh in the full image's camera
        v = np.loadtxt([line[2:] for line in open(p["obj"]) if line.startswith("v ")])
        centre = inference.crop_to_image_px(
            np.zeros((1, 2)),
            (
                p["crop_box"]["x"] + p["crop_box"]["side"] / 2,
                p["crop_box"]["y"] + p["crop_box"]["side"] / 2,
                p["crop_box"]["side"],
            ),
            rec["img_size"],
        )[0]
        t = inference.full_frame_translation(p["cam"], centre, p["crop_box"]["side"], 5000 / 256 * 800, (399.5, 349.5))
        np.testing.assert_allclose(p["translation"], t, rtol=1e-6)
        np.testing.assert_allclose(v.mean(0) - np.asarray(p["translation"]), v.mean(0) - t, atol=1e-6)
    # the two people are two crops: different boxes, different translations
    assert rec["people"][0]["translation"][0] < rec["people"][1]["translation"][0]
    png = np.asarray(Image.open(rec["overlay"]))
    assert 700 <= png.shape[0] < 720 and 2400 <= png.shape[1] < 2440  # image | people over it | side view
    h, w = png.shape[0], png.shape[1] // 3
    assert not np.array_equal(png[:h, :w], png[:h, w : 2 * w])  # something was drawn
    with open(os.path.join(out, "random photo é.json")) as f:
        assert json.load(f)["people"][1]["box"] == rec["people"][1]["box"]


@pytest.mark.slow
def test_cli_finds_people_from_openpose_and_boxes_files(tmp_path, trained_workdir, cache_env, repo):
    """`python -m hmr_jax.predict --keypoints / --boxes --focal-length --principal-point` end to end:
    two people from an OpenPose file (BODY_25), one from a boxes file, the full-frame camera as given."""
    src = os.path.join(trained_workdir["data_dir"], "images", trained_workdir["names"][4])
    image = tmp_path / "two people.jpg"  # a space in the name
    Image.open(src).resize((64, 48)).save(image)
    body25 = []
    for x0 in (8.0, 40.0):  # two people side by side: neck, hips, knees, ankles confident
        kp = np.zeros((25, 3))
        kp[[1, 8, 9, 12, 10, 13, 11, 14]] = [
            [x0 + 6, 8, 0.9],
            [x0 + 6, 24, 0.9],
            [x0 + 3, 24, 0.9],
            [x0 + 9, 24, 0.9],
            [x0 + 3, 34, 0.9],
            [x0 + 9, 34, 0.9],
            [x0 + 3, 44, 0.9],
            [x0 + 9, 44, 0.9],
        ]
        body25.append({"pose_keypoints_2d": kp.ravel().tolist()})
    keypoints = tmp_path / "two people_keypoints.json"
    keypoints.write_text(json.dumps({"version": 1.2, "people": body25}))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"two people.jpg": [[10, 4, 20, 40, 0.9]]}))
    env = {**os.environ, **cache_env()}

    def predict(*args):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        cmd = [
            sys.executable,
            "-m",
            "hmr_jax.predict",
            f"--workdir={trained_workdir['workdir']}",
            "--images",
            str(image),
            f"--out={out}",
            "--checkpoint=latest",
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(repo), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(out / "two people.json") as f:
            return json.load(f)

    rec = predict(f"--keypoints={keypoints}", "--focal-length=1000", "--principal-point=30,20")
    assert len(rec["people"]) == 2
    assert rec["camera_image_px"]["focal_length"] == 1000.0
    assert rec["camera_image_px"]["principal_point"] == [30.0, 20.0]
    assert all(len(p["translation"]) == 3 and p["translation"][2] > 0 for p in rec["people"])
    rec = predict(f"--boxes={boxes}")
    assert len(rec["people"]) == 1 and rec["people"][0]["box"][:4] == [10, 4, 20, 40]

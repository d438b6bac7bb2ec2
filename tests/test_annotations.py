"""SPIN / 4D-Humans annotation files: read, write, validation, splits, joint sets."""

import pathlib

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmr_jax.data import annotations as ann_lib


def test_round_trip(tmp_path, fake_arrays):
    arrays = fake_arrays(5, np.random.default_rng(0))
    path = tmp_path / "a.npz"
    ann_lib.save_spin(path, arrays)
    ann = ann_lib.load(path)
    assert len(ann) == 5 and ann.joint_set == "smpl24" and ann.has_camera
    for k in ("center", "scale", "part", "S", "pose", "shape", "cam_focal", "cam_center", "cam_t"):
        np.testing.assert_allclose(getattr(ann, k), arrays[k])
    np.testing.assert_array_equal(ann.has_joints_3d, 1.0)
    assert list(ann.imgname) == list(arrays["imgname"])
    ann_lib.save_spin(tmp_path / "b.npz", ann)  # Annotations objects too
    np.testing.assert_array_equal(ann_lib.load(tmp_path / "b.npz").part, ann.part)
    with np.load(path) as f:  # no pickles in the file
        assert all(f[k].dtype != object for k in f.files)


def test_spin_defaults(tmp_path, fake_arrays):
    arrays = fake_arrays(3, np.random.default_rng(1))
    minimal = {k: arrays[k] for k in ("imgname", "center", "scale", "part")}
    minimal["imgname"] = np.array([b"S9_Directions_1.60457274_000001.jpg"] * 3)  # bytes, as SPIN
    np.savez(tmp_path / "spin.npz", **minimal)
    ann = ann_lib.load(tmp_path / "spin.npz")
    assert ann.joint_set == "spin24"  # SPIN files carry no joint_set
    np.testing.assert_array_equal(ann.has_smpl, 0.0)
    np.testing.assert_array_equal(ann.has_joints_3d, 0.0)
    assert ann.S.shape == (3, 24, 4) and ann.pose.shape == (3, 72)
    assert list(ann.subject) == ["S9"] * 3 and ann.action[0] == "Directions_1"
    assert ann.camera[0] == "60457274" and not ann.has_camera


def test_structural_errors(tmp_path, fake_arrays):
    arrays = fake_arrays(3, np.random.default_rng(2))
    bad = dict(arrays)
    del bad["part"]
    with pytest.raises(KeyError, match="missing required field.*'part'"):
        ann_lib.from_arrays(bad, "x.npz")
    bad = dict(arrays, S=arrays["S"][:, :17])
    with pytest.raises(ValueError, match=r"S: expected shape \(3, 24, 4\), found \(3, 17, 4\)"):
        ann_lib.from_arrays(bad, "x.npz")
    with pytest.raises(ValueError, match="joint_set"):
        ann_lib.from_arrays(dict(arrays, joint_set=np.array("coco17")))
    with pytest.raises(KeyError, match="camera fields"):
        ann_lib.from_arrays({k: v for k, v in arrays.items() if k != "cam_t"})
    with pytest.raises(FileNotFoundError, match="nothing"):
        ann_lib.load(tmp_path / "nope.npz")


def test_nan_found_and_refused_on_save(tmp_path, fake_arrays):
    arrays = fake_arrays(4, np.random.default_rng(3))
    arrays["S"][2, 5, 0] = np.nan
    arrays["scale"][3] = 0.0
    ann = ann_lib.from_arrays(arrays)
    bad = ann_lib.find_invalid(ann)
    assert bad == {2: "non-finite S", 3: "scale must be > 0, found 0.0"}
    with pytest.raises(ValueError, match="img_0002.jpg: non-finite S"):
        ann_lib.save_spin(tmp_path / "x.npz", arrays)
    sizes = np.array([[160, 200]] * 4)
    ann2 = ann_lib.from_arrays(
        dict(
            fake_arrays(4, np.random.default_rng(3)),
            center=np.array([[100, 80], [-500, 80], [100, 900], [100, 80]], np.float32),
        )
    )
    assert set(ann_lib.find_invalid(ann2, sizes)) == {1, 2}


def test_missing_images(tmp_path, fake_arrays, fake_images):
    arrays = fake_arrays(3, np.random.default_rng(4))
    fake_images(tmp_path, arrays["imgname"][:2], np.random.default_rng(0))
    missing = ann_lib.find_missing_images(ann_lib.from_arrays(arrays), tmp_path)
    assert list(missing) == [2] and "img_0002.jpg" in missing[2]


def test_h36m_names_and_subject_split(fake_arrays):
    assert ann_lib.parse_h36m_name("images/S11_Walking Dog_2.55011271_001234.jpg") == {
        "subject": "S11",
        "action": "Walking Dog_2",
        "camera": "55011271",
        "frame": 1234,
    }
    assert ann_lib.parse_h36m_name("coco/000000123.jpg") is None
    arrays = fake_arrays(6, np.random.default_rng(5))
    arrays["imgname"] = np.array([f"S{s}_Eating.54138969_{i:06d}.jpg" for i, s in enumerate([1, 9, 5, 11, 8, 2])])
    ann = ann_lib.from_arrays(arrays)
    with pytest.warns(UserWarning, match="S2"):
        np.testing.assert_array_equal(ann_lib.split_indices(ann, "train"), [0, 2, 4])
    with pytest.warns(UserWarning, match="S2"):
        np.testing.assert_array_equal(ann_lib.split_indices(ann, "validation"), [1, 3])


def test_generic_subject_split_is_subject_disjoint(fake_arrays):
    arrays = fake_arrays(8, np.random.default_rng(9))
    arrays["subject"] = np.array(["sub2", "sub0", "sub1", "sub2", "sub0", "sub3", "sub3", "sub1"])
    ann = ann_lib.from_arrays(arrays)
    np.testing.assert_array_equal(
        ann_lib.split_indices(ann, "validation", val_fraction=0.25), [5, 6]
    )  # the last of 4 sorted subjects: sub3
    np.testing.assert_array_equal(ann_lib.split_indices(ann, "train", val_fraction=0.25), [0, 1, 2, 3, 4, 7])


def test_fraction_split(fake_arrays):
    ann = ann_lib.from_arrays(fake_arrays(20, np.random.default_rng(6)))
    tr = ann_lib.split_indices(ann, "train", val_fraction=0.2)
    va = ann_lib.split_indices(ann, "validation", val_fraction=0.2)
    np.testing.assert_array_equal(tr, np.arange(16))
    np.testing.assert_array_equal(va, np.arange(16, 20))


def test_resample():
    pos = np.arange(23)
    np.testing.assert_array_equal(pos[ann_lib.resample_mask(pos, 0.5)], np.arange(0, 23, 2))
    np.testing.assert_array_equal(pos[ann_lib.resample_mask(pos, 0.2)], np.arange(0, 23, 5))
    assert ann_lib.resample_mask(pos, 1.0).all()
    with pytest.raises(ValueError, match="resample ratio"):
        ann_lib.resample_step(0.0)


def test_frame_and_sequence_fields(tmp_path, fake_arrays):
    arrays = fake_arrays(6, np.random.default_rng(2))
    arrays["frame"] = np.array([4, 0, 2, 1, 3, 5])
    arrays["sequence"] = np.array(["walk", "walk", "walk", "run", "run", "run"])
    ann_lib.save_spin(tmp_path / "f.npz", arrays)
    ann = ann_lib.load(tmp_path / "f.npz")
    assert ann.frame.dtype == np.int64 and list(ann.frame) == [4, 0, 2, 1, 3, 5]
    assert list(ann.sequence) == list(arrays["sequence"])
    assert list(ann.select([5, 0]).frame) == [5, 4]
    with np.load(tmp_path / "f.npz") as f:
        assert f["frame"].dtype == np.int64 and f["sequence"].dtype.kind == "U"
    ints = ann_lib.from_arrays(dict(arrays, sequence=np.array([7, 7, 7, 3, 3, 3])))
    assert ints.sequence.dtype == np.int64
    ann_lib.save_spin(tmp_path / "i.npz", ints)
    np.testing.assert_array_equal(ann_lib.load(tmp_path / "i.npz").sequence, [7, 7, 7, 3, 3, 3])
    # whole-number floats are accepted; anything else names the field
    assert ann_lib.from_arrays(dict(arrays, frame=arrays["frame"] * 1.0)).frame.dtype == np.int64
    with pytest.raises(ValueError, match="frame: expected integers, found 0.5"):
        ann_lib.from_arrays(dict(arrays, frame=np.array([0.5, 1, 2, 3, 4, 5])))
    with pytest.raises(ValueError, match=r"frame: expected shape \(6,\)"):
        ann_lib.from_arrays(dict(arrays, frame=np.arange(5)))
    with pytest.raises(ValueError, match="frame: expected integers"):
        ann_lib.from_arrays(dict(arrays, frame=np.array(["a"] * 6)))
    with pytest.raises(ValueError, match=r"sequence: expected shape \(6,\)"):
        ann_lib.from_arrays(dict(arrays, sequence=np.array(["a"] * 4)))
    # H36M names give the frame number too
    h36m = dict(
        fake_arrays(2, np.random.default_rng(0)),
        imgname=np.array(["S9_Eating.54138969_000011.jpg", "S9_Eating.54138969_000006.jpg"]),
    )
    assert list(ann_lib.from_arrays(h36m).frame) == [11, 6]


def test_resample_by_frame_within_sequences(fake_arrays):
    arrays = fake_arrays(9, np.random.default_rng(3))
    # rows shuffled in time; two sequences; frames step by 5 (already thinned, as SPIN's H36M)
    arrays["sequence"] = np.array([1, 2, 1, 2, 1, 2, 1, 1, 2])
    arrays["frame"] = np.array([10, 6, 0, 1, 5, 11, 15, 20, 16])
    ann = ann_lib.from_arrays(arrays)
    np.testing.assert_array_equal(ann_lib.resample_rank(ann), [2, 1, 0, 0, 1, 2, 3, 4, 3])
    keep = ann_lib.resample_keep(ann, 0.5)  # frames 0, 10, 20 of seq 1; 1, 11 of seq 2
    np.testing.assert_array_equal(np.nonzero(keep)[0], [0, 2, 3, 5, 7])
    # frames shared by several rows (cameras) are kept or dropped together
    arrays["sequence"] = np.zeros(9, np.int64)
    arrays["frame"] = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    keep = ann_lib.resample_keep(ann_lib.from_arrays(arrays), 0.5)
    np.testing.assert_array_equal(np.nonzero(keep)[0], [0, 1, 4, 5, 8])
    # no sequence / subject: one sequence; no frame: row positions
    del arrays["sequence"]
    arrays["frame"] = np.array([8, 7, 6, 5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(ann_lib.resample_rank(ann_lib.from_arrays(arrays)), arrays["frame"])
    del arrays["frame"]
    np.testing.assert_array_equal(ann_lib.resample_rank(ann_lib.from_arrays(arrays)), np.arange(9))


@pytest.mark.parametrize("joint_set", ann_lib.FILE_JOINT_SETS)
def test_file_joint_sets(joint_set, fake_arrays):
    # Flip permutations and names of every joint set: tests/test_skeleton.py.
    arrays = fake_arrays(2, np.random.default_rng(0))
    assert ann_lib.from_arrays(dict(arrays, joint_set=np.array(joint_set))).joint_set == joint_set
    with pytest.raises(ValueError, match="joint_set"):  # the evaluation regressor's set, not a file's
        ann_lib.from_arrays(dict(arrays, joint_set=np.array("h36m17")))


def _fourd_arrays(n, rng):
    return {
        "imgname": np.array([f"x/{i}.jpg" for i in range(n)]),
        "center": rng.uniform(100, 200, (n, 1, 2)),
        "scale": rng.uniform(100, 300, (n, 2)),  # pixels, (w, h)
        "body_keypoints_2d": rng.uniform(0, 300, (n, 25, 3)),
        "extra_keypoints_2d": rng.uniform(0, 300, (n, 19, 3)),
        "body_keypoints_3d": rng.uniform(-1, 1, (n, 25, 4)),
        "extra_keypoints_3d": rng.uniform(-1, 1, (n, 19, 4)),
        "betas": rng.normal(size=(n, 10)),
        "has_betas": np.array([1.0, 1.0, 0.0][:n]),
    }


def test_4dhumans_mapping(tmp_path):
    rng = np.random.default_rng(7)
    d = _fourd_arrays(3, rng)
    d["body_pose"] = rng.normal(size=(3, 72))
    d["has_body_pose"] = np.ones(3)
    np.savez(tmp_path / "h.npz", **d)
    ann = ann_lib.load(tmp_path / "h.npz")  # detected from its keys
    assert ann.joint_set == "spin24"
    np.testing.assert_allclose(ann.scale, d["scale"].max(1) / 200, rtol=1e-6)
    np.testing.assert_allclose(ann.center, d["center"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(ann.part[:, :19], d["extra_keypoints_2d"], rtol=1e-6)
    np.testing.assert_allclose(ann.part[:, 19], d["body_keypoints_2d"][:, 0], rtol=1e-6)  # nose
    np.testing.assert_allclose(ann.part[:, 20], d["body_keypoints_2d"][:, 16], rtol=1e-6)  # L eye
    np.testing.assert_allclose(ann.part[:, 23], d["body_keypoints_2d"][:, 17], rtol=1e-6)  # R ear
    np.testing.assert_allclose(ann.S[:, :19], d["extra_keypoints_3d"], rtol=1e-6)
    np.testing.assert_allclose(ann.pose, d["body_pose"], rtol=1e-6)
    np.testing.assert_array_equal(ann.has_smpl, [1, 1, 0])
    np.testing.assert_allclose(ann.openpose, d["body_keypoints_2d"], rtol=1e-6)


def test_4dhumans_69_pose_with_global_orient_matrix():
    rng = np.random.default_rng(8)
    d = _fourd_arrays(3, rng)
    go = np.array([[np.pi, 0, 0], [0.1, 0.2, -0.3], [0, 3.0, 0.5]])
    d["global_orient"] = Rotation.from_rotvec(go).as_matrix()[:, None]
    d["body_pose"] = rng.normal(size=(3, 69))
    ann = ann_lib.from_4dhumans_arrays(d)
    np.testing.assert_allclose(Rotation.from_rotvec(ann.pose[:, :3]).as_matrix(), d["global_orient"][:, 0], atol=1e-5)
    np.testing.assert_allclose(ann.pose[:, 3:], d["body_pose"], rtol=1e-6)
    del d["global_orient"]
    with pytest.raises(KeyError, match="global_orient"):
        ann_lib.from_4dhumans_arrays(d)


def test_data_package_imports_no_jax():
    root = pathlib.Path(ann_lib.__file__).parent
    for name in ("__init__", "annotations", "augment", "pipeline", "tfds_builder"):
        f = root / f"{name}.py"
        text = f.read_text()
        assert "import jax" not in text and "from jax" not in text, f

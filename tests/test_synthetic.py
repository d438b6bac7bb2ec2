"""Tests for the hmr_jax.data.synthetic package (small: 12 images at 96 px)."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from hmr_jax import geometry, metrics, smpl
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import synthetic
from hmr_jax.data.synthetic import body as body_lib
from hmr_jax.data.synthetic import poses, samples, scenes, writer

NUM, SEED, SIZE = 12, 3, 96
KW = dict(val_fraction=0.25, frames_per_sequence=3, sequences_per_subject=2, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthetic.generate(out, NUM, SEED, img_size=SIZE, workers=1, **KW)
    return out, summary


def _raw(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_files_exist_and_decode(dataset):
    out, summary = dataset
    for name in ("annotations.npz", "train.npz", "validation.npz", "meta.json", "preview.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num"] == NUM and meta["train"] + meta["validation"] == NUM
    assert meta["validation"] == round(NUM * KW["val_fraction"])
    assert meta["seed"] == SEED and meta["generator"] == writer.GENERATOR_VERSION
    assert len(meta["body_model_sha256"]) == 64 and os.path.isfile(meta["body_model"])
    ann = ann_lib.load(out / "annotations.npz")
    assert len(ann) == NUM
    assert not ann_lib.find_missing_images(ann, out)
    for name in ann.imgname:
        img = Image.open(out / name)
        assert img.format == "JPEG" and img.size == (SIZE, SIZE) and img.mode == "RGB"
        assert np.asarray(img).std() > 5  # not blank


def test_annotation_keys_and_shapes(dataset):
    out, _ = dataset
    ann = ann_lib.load(out / "annotations.npz")
    n = NUM
    assert ann.joint_set == "smpl24"
    assert ann.part.shape == (n, 24, 3) and ann.S.shape == (n, 24, 4)
    assert ann.pose.shape == (n, 72) and ann.shape.shape == (n, 10)
    assert ann.center.shape == (n, 2) and ann.scale.shape == (n,)
    assert ann.cam_focal.shape == (n, 2) and ann.cam_center.shape == (n, 2) and ann.cam_t.shape == (n, 3)
    np.testing.assert_array_equal(ann.has_smpl, 1.0)
    np.testing.assert_array_equal(ann.S[..., 3], 1.0)
    np.testing.assert_allclose(ann.S[:, 0, :3], 0.0, atol=1e-6)  # root-centred
    assert np.all(np.abs(ann.shape) <= scenes.BETA_CLIP)
    assert not ann_lib.find_invalid(ann, np.full((n, 2), SIZE))
    raw = _raw(out / "annotations.npz")
    assert raw["sequence"].shape == (n,) and raw["frame"].shape == (n,)
    split = _raw(out / "train.npz")
    assert "subject" in split and split["subject"].shape == split["imgname"].shape


def test_projection_reproduces_part(dataset):
    out, _ = dataset
    ann = ann_lib.load(out / "annotations.npz")
    cam_joints = ann.S[..., :3].astype(np.float64) + ann.cam_t[:, None].astype(np.float64)
    # x = fx X / Z + cx, y = fy Y / Z + cy (as geometry.perspective_project; numpy for float64).
    uv = cam_joints[..., :2] / cam_joints[..., 2:] * ann.cam_focal[:, None] + ann.cam_center[:, None]
    np.testing.assert_allclose(uv, ann.part[..., :2], atol=0.01)
    inside = np.all((uv >= -0.5) & (uv <= SIZE - 0.5), axis=-1)
    np.testing.assert_array_equal(ann.part[..., 2], inside.astype(np.float32))
    assert ann.part[..., 2].mean() > 0.9
    # The square box holds every visible joint; center + scale as SPIN (side = 200 * scale).
    half = 100.0 * ann.scale[:, None, None]
    vis = ann.part[..., 2] > 0
    assert np.all((np.abs(ann.part[..., :2] - ann.center[:, None]) <= half)[vis])
    assert np.all(ann.scale * 200 > 0.3 * SIZE) and np.all(ann.scale * 200 < 1.6 * SIZE)


def test_smpl_forward_matches_S(dataset):
    out, summary = dataset
    model = smpl.load(summary["body_model"])
    ann = ann_lib.load(out / "annotations.npz")
    joints = np.asarray(jax.jit(smpl.forward)(model, ann.shape, ann.pose).joints)
    np.testing.assert_allclose(joints - joints[:, :1], ann.S[..., :3], atol=1e-4)
    # Camera frame has y down: the head is above (smaller y than) the pelvis for upright bodies.
    assert np.mean(ann.S[:, 15, 1] < ann.S[:, 0, 1]) >= 0.75


def test_upright_global_orientation_convention():
    """A body with no tilt, yaw 0 and elevation 0 has global orientation [pi, 0, 0]."""
    seq = scenes.SequenceSetup(
        pose_a=np.zeros((24, 3)),
        pose_b=np.zeros((24, 3)),
        yaw=0.0,
        yaw_drift=0.0,
        tilt=np.zeros(3),
        elevation=0.0,
        focal=100.0,
        distance=3.0,
        root_xy=np.zeros(2),
        light_dir=np.array([0.0, 0.0, 1.0]),
        ambient=0.3,
        jpeg_quality=90,
        noise_sigma=0.0,
    )
    pose = scenes.camera_pose(seq, np.zeros((24, 3)), 0.0)
    np.testing.assert_allclose(np.abs(pose[:3]), [np.pi, 0, 0], atol=1e-6)


def test_deterministic(dataset, tmp_path):
    out, _ = dataset
    again = synthetic.generate(tmp_path, NUM, SEED, img_size=SIZE, workers=2, write_preview=False, **KW)
    assert again["num"] == NUM
    for name in ("annotations.npz", "train.npz", "validation.npz"):
        a, b = _raw(out / name), _raw(tmp_path / name)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    for img in sorted(os.listdir(out / "images")):
        assert (out / "images" / img).read_bytes() == (tmp_path / "images" / img).read_bytes(), img


def test_other_seed_differs(dataset, tmp_path):
    out, _ = dataset
    synthetic.generate(tmp_path, 3, SEED + 1, img_size=SIZE, workers=1, write_preview=False, **KW)
    a, b = ann_lib.load(out / "annotations.npz"), ann_lib.load(tmp_path / "annotations.npz")
    assert not np.allclose(a.pose[:3], b.pose[:3])


def test_validation_subjects_unseen(dataset):
    out, _ = dataset
    tr, va = ann_lib.load(out / "train.npz"), ann_lib.load(out / "validation.npz")
    assert len(tr) + len(va) == NUM and len(va) == 3
    assert not set(tr.subject.tolist()) & set(va.subject.tolist())
    assert not {tuple(b) for b in tr.shape.round(5)} & {tuple(b) for b in va.shape.round(5)}
    # annotations.npz (no subject field) splits by position into the same two sets.
    full = ann_lib.load(out / "annotations.npz")
    assert full.subject is None
    for split, part in (("train", tr), ("validation", va)):
        rows = ann_lib.split_indices(full, split, val_fraction=KW["val_fraction"])
        np.testing.assert_array_equal(full.imgname[rows], part.imgname)


def test_layout_disjoint_subjects_and_sequences():
    for num, n_train in ((10, 9), (100, 90), (1000, 900), (7, 7)):
        lay = samples.Layout(num, n_train, 4, 3)
        loc = [lay.locate(i) for i in range(num)]
        for field in (1, 2):
            tr = {x[field] for x in loc if x[0] == "train"}
            va = {x[field] for x in loc if x[0] == "validation"}
            assert not tr & va
        assert [x[3] for x in loc[:7]] == [0, 1, 2, 3, 0, 1, 2]
    with pytest.raises(IndexError, match="sample index"):
        samples.Layout(5, 4).locate(5)


def test_sequences_are_smooth(dataset):
    out, _ = dataset
    raw = _raw(out / "annotations.npz")
    seq, pose, shape = raw["sequence"], raw["pose"], raw["shape"]
    rot = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(-1, 24, 3, 3)
    same = seq[1:] == seq[:-1]
    assert same.any() and (~same).any()
    np.testing.assert_array_equal(shape[1:][same], shape[:-1][same])
    step = np.linalg.norm(rot[1:] - rot[:-1], axis=(-1, -2)).mean(-1)  # mean joint change
    assert step[same].mean() < step[~same].mean()


def test_pose_library_within_limits():
    lib = np.stack([poses.key_pose_array(n) for n in poses.KEY_POSE_NAMES])
    rng = np.random.default_rng(0)
    model = smpl.load(_default_body())
    rest = np.asarray(model.joint_template, np.float64)
    sampled = np.stack([poses.sample_key_blend(rng, rest_joints=rest) for _ in range(150)])
    # One jitted call for library + samples (eager jax dispatch of the metric takes seconds).
    outside_limits = jax.jit(lambda aa: metrics.pose_outside_limits(geometry.axis_angle_to_matrix(aa)))
    outside = np.asarray(outside_limits(np.concatenate([lib, sampled]).astype(np.float32)))
    np.testing.assert_array_equal(outside[: len(lib)], 0.0)
    outside = outside[len(lib) :]
    assert outside.mean() < 0.005 and (outside > 0).mean() < 0.05
    assert np.mean([poses.self_intersects(rest, p) for p in sampled]) < 0.05
    # Varied: the samples are not all one key pose.
    assert np.std(sampled.reshape(len(sampled), -1), axis=0).mean() > 0.1


def test_mirror_pose_is_an_involution():
    p = np.random.default_rng(1).normal(0, 0.3, (24, 3))
    np.testing.assert_allclose(poses.mirror_pose(poses.mirror_pose(p)), p)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num"):
        synthetic.generate(tmp_path, 0, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        synthetic.generate(tmp_path, 4, 0, val_fraction=1.5)


def _default_body():
    from hmr_jax import body_model

    return body_model.default_body_model_path()


def _numpy_and_smpl_forward(betas, pose):
    model = smpl.load(_default_body())
    body = body_lib.body_from_model(model)
    v_shaped, rest = body_lib.shaped(body, betas)
    verts, joints = body_lib.forward(body, v_shaped, rest, pose)
    np.testing.assert_allclose(body_lib.posed_joints(rest, pose), joints, atol=1e-9)
    return (verts, joints), jax.jit(smpl.forward)(model, betas[None], pose.reshape(1, 72))


def test_numpy_body_joints_match_smpl_forward():
    rng = np.random.default_rng(2)
    (verts, joints), out = _numpy_and_smpl_forward(rng.normal(0, 1, 10), rng.normal(0, 0.4, (24, 3)))
    np.testing.assert_allclose(joints, out.joints[0], atol=1e-4)
    (verts, _), out = _numpy_and_smpl_forward(np.zeros(10), np.zeros((24, 3)))
    np.testing.assert_allclose(verts, out.vertices[0], atol=1e-6)


def test_numpy_body_vertices_match_smpl_forward():
    rng = np.random.default_rng(2)
    (verts, _), out = _numpy_and_smpl_forward(rng.normal(0, 1, 10), rng.normal(0, 0.4, (24, 3)))
    np.testing.assert_allclose(verts, out.vertices[0], atol=1e-4)


def test_command_line(tmp_path, capsys):
    from hmr_jax.data.synthetic import __main__ as cli

    summary = cli.main(["--out", str(tmp_path), "--num", "2", "--img-size", "32", "--workers", "1", "--no-preview"])
    assert summary["num"] == 2 and (tmp_path / "annotations.npz").is_file()
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["num"] == 2

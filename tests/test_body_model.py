"""Tests of the procedural body model (hmr_jax/body_model.py)."""

import numpy as np
import pytest

from hmr_jax import body_model, skeleton, smpl


@pytest.fixture(scope="module")
def model():
    return body_model.make_body_model(seed=0)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    return body_model.write_body_model(tmp_path_factory.mktemp("bm") / "body.npz", seed=0)


def test_keys_shapes_dtypes(model):
    v = model["v_template"]
    n = v.shape[0]
    assert 4000 <= n <= 8000
    assert v.shape == (n, 3) and v.dtype == np.float64
    assert model["f"].dtype == np.int32 and model["f"].shape[1] == 3
    assert model["f"].min() == 0 and model["f"].max() == n - 1
    assert model["shapedirs"].shape == (n, 3, 10)
    assert model["posedirs"].shape == (n, 3, 207)
    assert model["J_regressor"].shape == (24, n)
    assert model["weights"].shape == (n, 24)
    kt = model["kintree_table"]
    assert kt.shape == (2, 24) and kt.dtype == np.int64
    assert kt[0, 0] == 4294967295
    assert tuple(kt[0, 1:]) == skeleton.SMPL24_PARENTS[1:]
    assert tuple(model["joint_names"].tolist()) == skeleton.SMPL24_NAMES
    for key, arr in model.items():
        if arr.dtype.kind == "f":
            assert np.all(np.isfinite(arr)), key


def test_body_frame_and_size(model):
    v = model["v_template"]
    J = model["J_regressor"] @ v
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.85
    assert -1.22 < v[:, 1].min() < -1.1  # soles, as in SMPL
    assert abs(J[0, 1]) < 0.3 and abs(J[0, 0]) < 1e-6  # pelvis near the origin
    assert J[1, 0] > 0 and J[16, 0] > 0 and J[20, 0] > 0.6  # subject's left at +x, T-pose
    assert abs(J[20, 1] - J[16, 1]) < 0.03  # arms horizontal
    nose_z = v[v[:, 1] > J[15, 1], 2].max()
    back_z = v[v[:, 1] > J[15, 1], 2].min()
    assert nose_z > -back_z  # the face looks to +z
    np.testing.assert_allclose(v[:, 0].max(), -v[:, 0].min(), atol=1e-9)  # symmetric


def test_deterministic():
    a = body_model.make_body_model(seed=3)
    b = body_model.make_body_model(seed=3)
    c = body_model.make_body_model(seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["v_template"], c["v_template"])
    assert a["v_template"].shape == c["v_template"].shape


def test_skinning_weights(model):
    w = model["weights"]
    assert w.min() >= 0
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    assert (w > 0).sum(1).max() <= 4
    assert np.all(w.max(0) > 0.5)  # every joint drives some vertices
    # Smooth: no weight changes faster than from 0 to 1 over ~3 cm of surface.
    f, v = model["f"], model["v_template"]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    length = np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1)
    slope = np.abs(w[edges[:, 0]] - w[edges[:, 1]]).max(1) / length  # per metre
    assert np.quantile(slope, 0.99) < 30 and slope.max() < 50


def test_regressor_reproduces_joints(model):
    R = model["J_regressor"]
    assert R.min() >= 0
    np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-9)
    assert np.all((R > 0).sum(1) <= 200)
    np.testing.assert_allclose(R @ model["v_template"], model["J"], atol=0.01)


def _mesh_edges_ok(f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(e, 1), axis=0, return_counts=True)
    directed = np.unique(e, axis=0)
    return np.all(counts == 2) and len(directed) == len(e)  # consistent winding


def test_mesh_closed_and_outward(model):
    v, f = model["v_template"], model["f"]
    assert _mesh_edges_ok(f)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    vol = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert 0.05 < vol < 0.12  # m^3 (a ~70 kg body plus overlaps)
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2
    assert area.min() > 0


def test_shape_directions(model):
    v, sd = model["v_template"], model["shapedirs"]
    J0 = model["J_regressor"] @ v

    def shaped(k, value):
        return v + value * sd[:, :, k]

    def height(x):
        return x[:, 1].max() - x[:, 1].min()

    def waist_girth(x):  # width x depth of the torso at the navel
        sel = np.abs(x[:, 1] - (J0[3, 1] + 0.05)) < 0.02
        sel &= np.abs(x[:, 0]) < 0.25
        return np.ptp(x[sel, 0]) * np.ptp(x[sel, 2])

    assert height(shaped(0, 2)) > height(shaped(0, -2)) + 0.3  # ~ +-11 cm
    assert waist_girth(shaped(1, 2)) > 1.5 * waist_girth(shaped(1, -2))
    R = model["J_regressor"]
    leg = lambda x: (R @ x)[1, 1] - (R @ x)[7, 1]
    arm = lambda x: (R @ x)[20, 0] - (R @ x)[16, 0]
    assert leg(shaped(2, 2)) > leg(shaped(2, -2)) + 0.05
    assert (R @ shaped(3, 2))[16, 0] > (R @ shaped(3, -2))[16, 0] + 0.02
    assert (R @ shaped(4, 2))[1, 0] > (R @ shaped(4, -2))[1, 0] + 0.01
    assert arm(shaped(6, 2)) > arm(shaped(6, -2)) + 0.05
    # Every direction moves the body, the first the most; +-2 stays a plausible size.
    rms = np.sqrt((sd**2).sum(1).mean(0))
    assert np.all(rms > 0.002) and rms[0] == rms.max()
    for k in range(10):
        for s in (-2, 2):
            assert 1.45 < height(shaped(k, s)) < 2.0


def test_posedirs(model):
    p = model["posedirs"]
    assert np.abs(p).max() > 0.001
    # A 90 degree knee bend moves the knee vertices by about a centimetre at most.
    R = np.eye(3)[None].repeat(23, 0)
    R[4 - 1] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    d = p @ (R - np.eye(3)).reshape(-1)
    assert 0.003 < np.linalg.norm(d, axis=1).max() < 0.015


def test_smpl_load_and_forward(npz_path, model):
    m = smpl.load(npz_path)
    assert m.num_vertices == model["v_template"].shape[0]
    rng = np.random.default_rng(0)
    betas = rng.standard_normal((5, 10)).astype(np.float32)
    betas[:2] = 0.0
    pose = (0.4 * rng.standard_normal((5, 72))).astype(np.float32)
    pose[0] = 0.0
    pose[1] = body_model.walking_pose()
    out = smpl.forward(m, betas, pose)  # one call: compiling each new shape is slow on CPU
    verts, joints = np.asarray(out.vertices), np.asarray(out.joints)
    assert verts.shape == (5, m.num_vertices, 3)
    assert np.all(np.isfinite(verts)) and np.all(np.isfinite(joints))
    np.testing.assert_allclose(verts[0], model["v_template"], atol=1e-5)
    np.testing.assert_allclose(joints[0], model["J"], atol=0.01)
    # Walking pose: every vertex stays near some joint (no collapse or explosion).
    dist = np.linalg.norm(verts[1][:, None] - joints[1][None], axis=-1).min(1)
    assert dist.max() < 0.25


def test_default_path_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HMR_JAX_CACHE", str(tmp_path))
    p = body_model.default_body_model_path()
    assert p.exists() and p.parent == tmp_path and body_model.GENERATOR_VERSION in p.name
    mtime = p.stat().st_mtime_ns
    assert body_model.default_body_model_path() == p and p.stat().st_mtime_ns == mtime
    assert [q.name for q in tmp_path.iterdir()] == [p.name]  # no temp files left


def test_cli(tmp_path):
    out = tmp_path / "b.npz"
    body_model.main(["--out", str(out), "--seed", "1"])
    with np.load(out) as z:
        assert z["v_template"].shape[1] == 3

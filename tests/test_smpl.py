"""hmr_jax.smpl against smplx (PyTorch) on the same files, safe loading, gradients."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from hmr_jax import skeleton, smpl

V, K = 6890, 10


def random_smpl_arrays(seed=0, num_betas=K):
    """Random but well-formed arrays with SMPL's sizes (6890 vertices, 24 joints, 207 pose dirs)."""
    rng = np.random.default_rng(seed)
    v_template = rng.normal(0, 0.3, (V, 3))
    weights = rng.random((V, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    j_reg = rng.random((24, V)) * (rng.random((24, V)) < 0.01)
    j_reg /= j_reg.sum(1, keepdims=True)
    kintree = np.stack([np.array(skeleton.SMPL24_PARENTS, np.int64) % 4294967296, np.arange(24)])
    return dict(
        v_template=v_template,
        shapedirs=rng.normal(0, 0.03, (V, 3, num_betas)),
        posedirs=rng.normal(0, 0.01, (V, 3, 207)),
        J_regressor=j_reg,
        weights=weights,
        kintree_table=kintree,
        f=rng.integers(0, V, (13776, 3)).astype(np.uint32),
    )


# --- writing pickles the way the SMPL authors' files look (chumpy, old module paths) ---


class _Ch:  # pickled under the name chumpy.ch.Ch
    def __init__(self, x):
        self.x = x

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set()}


class _Select:  # pickled under the name chumpy.reordering.Select
    def __init__(self, a, idxs, shape):
        self.a, self.idxs, self.preferred_shape = a, idxs, shape

    def __getstate__(self):
        return {"a": self.a, "idxs": self.idxs, "preferred_shape": self.preferred_shape}


_Ch.__module__ = _Select.__module__ = __name__


def write_official_style_pkl(path, arrays):
    """Protocol-2 pickle with chumpy objects, a scipy csc J_regressor and numpy.core paths."""
    obj = dict(arrays)
    obj["shapedirs"] = _Ch(arrays["shapedirs"])
    vt = arrays["v_template"]
    obj["v_template"] = _Select(_Ch(vt.ravel()[::-1].copy()), np.arange(vt.size)[::-1].copy(), vt.shape)
    obj["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
    obj["bs_style"], obj["bs_type"] = "lbs", "lrotmin"
    raw = pickle.dumps(obj, protocol=2)
    for new, old in [
        (f"{__name__}\n_Ch\n", "chumpy.ch\nCh\n"),
        (f"{__name__}\n_Select\n", "chumpy.reordering\nSelect\n"),
        ("numpy._core.multiarray\n", "numpy.core.multiarray\n"),
        ("scipy.sparse._csc\ncsc_matrix\n", "scipy.sparse.csc\ncsc_matrix\n"),
    ]:
        assert new.encode() in raw, new
        raw = raw.replace(new.encode(), old.encode())
    with open(path, "wb") as f:
        f.write(raw)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("smpl")
    arrays = random_smpl_arrays()
    plain = d / "plain.pkl"
    with open(plain, "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    official = d / "official.pkl"
    write_official_style_pkl(official, arrays)
    npz = d / "model.npz"
    np.savez(npz, **arrays)
    return dict(arrays=arrays, plain=plain, official=official, npz=npz)


def random_inputs(n, seed=1):
    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 1.0, (n, 72))
    pose[0] = 0.0  # exactly zero rotations
    pose[1, 3:] = 0.0
    pose[2] *= 3.0  # large angles (beyond pi)
    betas = rng.normal(0, 2.0, (n, K))
    return pose.astype(np.float32), betas.astype(np.float32)


def smplx_reference(path, pose, betas):
    import smplx
    import torch

    torch.set_num_threads(1)
    ref = smplx.SMPL(model_path=str(path), num_betas=K, batch_size=len(pose))
    with torch.no_grad():
        out = ref(
            betas=torch.tensor(betas),
            global_orient=torch.tensor(pose[:, :3]),
            body_pose=torch.tensor(pose[:, 3:]),
        )
    # smplx appends 21 extra vertex joints for SMPL; the first 24 are the kinematic joints.
    return out.vertices.numpy(), out.joints[:, :24].numpy()


@pytest.mark.parametrize("kind", ["official", "npz"])
def test_forward_matches_smplx(model_files, kind):
    pose, betas = random_inputs(6)
    ref_v, ref_j = smplx_reference(model_files["plain"], pose, betas)
    model = smpl.load(model_files[kind])
    out = jax.jit(smpl.forward)(model, betas, pose)
    assert out.vertices.shape == (6, V, 3) and out.vertices.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.vertices), ref_v, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(out.joints), ref_j, atol=1e-5, rtol=0)


def test_rotation_matrix_pose_and_batch_shapes(model_files):
    model = smpl.load(model_files["npz"])
    pose, betas = random_inputs(6)
    out = smpl.forward(model, betas, pose)
    rot = jax.vmap(jax.vmap(lambda a: smpl.geometry.axis_angle_to_matrix(a)))(pose.reshape(6, 24, 3))
    out_r = smpl.forward(model, betas.reshape(2, 3, K), rot.reshape(2, 3, 24, 3, 3))
    np.testing.assert_allclose(np.asarray(out_r.vertices).reshape(6, V, 3), out.vertices, atol=1e-5)
    single = smpl.forward(model, betas[3], pose[3], transl=jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(single.joints, out.joints[3] + jnp.array([1.0, 2.0, 3.0]), atol=1e-5)
    few = smpl.forward(model, betas[:, :4], pose)  # first 4 shape directions only
    padded = smpl.forward(model, np.concatenate([betas[:, :4], np.zeros((6, 6), np.float32)], 1), pose)
    np.testing.assert_allclose(few.vertices, padded.vertices, atol=1e-6)
    vmapped = jax.vmap(smpl.forward, in_axes=(None, 0, 0))(model, betas, pose)
    np.testing.assert_allclose(vmapped.vertices, out.vertices, atol=1e-5)


def test_too_many_betas_is_a_clear_error(model_files):
    model = smpl.load(model_files["npz"])
    with pytest.raises(ValueError, match="holds only 10 shape directions"):
        smpl.forward(model, np.zeros((1, 11)), np.zeros((1, 72)))


def test_gradients_match_finite_differences(model_files):
    arrays = random_smpl_arrays()
    model = smpl.from_arrays(**arrays, dtype=np.float64) if jax.config.jax_enable_x64 else None
    model = smpl.from_arrays(**arrays)
    rng = np.random.default_rng(3)
    target = smpl.forward(model, rng.normal(0, 1, (1, K)), rng.normal(0, 0.5, (1, 72))).vertices

    def loss(betas, pose):
        return jnp.mean(jnp.sum((smpl.forward(model, betas, pose).vertices - target) ** 2, -1))

    betas = jnp.zeros((1, K))
    pose = jnp.zeros((1, 72))  # zero pose: Rodrigues' singular point
    gb, gp = jax.grad(loss, argnums=(0, 1))(betas, pose)
    assert np.all(np.isfinite(gb)) and np.all(np.isfinite(gp))
    assert np.abs(gp).max() > 0
    eps = 1e-2
    for idx in [0, 5, 9]:
        d = np.zeros((1, K), np.float32)
        d[0, idx] = eps
        fd = (loss(betas + d, pose) - loss(betas - d, pose)) / (2 * eps)
        np.testing.assert_allclose(gb[0, idx], fd, rtol=2e-2, atol=1e-4)
    for idx in [0, 4, 20, 50]:
        d = np.zeros((1, 72), np.float32)
        d[0, idx] = eps
        fd = (loss(betas, pose + d) - loss(betas, pose - d)) / (2 * eps)
        np.testing.assert_allclose(gp[0, idx], fd, rtol=2e-2, atol=1e-4)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match=r"refusing to load global '(posix|os)\.system'"):
        smpl.load(path)
    assert not marker.exists()

    class EvalIt:
        def __reduce__(self):
            return (eval, ("1+1",))

    with open(path, "wb") as f:
        pickle.dump(EvalIt(), f, protocol=2)
    with pytest.raises(ValueError, match=r"(__builtin__|builtins)\.eval"):
        smpl.load(path)


def test_bad_files_get_clear_errors(tmp_path, model_files):
    arrays = model_files["arrays"]
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        smpl.load(tmp_path / "nope.npz")
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(model_files["official"].read_bytes()[:5000])
    with pytest.raises(ValueError, match="trunc.pkl.*truncated or corrupt"):
        smpl.load(trunc)
    trunc_npz = tmp_path / "trunc.npz"
    trunc_npz.write_bytes(model_files["npz"].read_bytes()[:5000])
    with pytest.raises(ValueError, match="trunc.npz"):
        smpl.load(trunc_npz)
    missing = {k: v for k, v in arrays.items() if k != "weights"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match=r"missing.npz: missing key\(s\) \['weights'\]"):
        smpl.load(tmp_path / "missing.npz")
    bad = dict(arrays, weights=arrays["weights"][:-1])
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"weights must have shape \(6890, 24\).*found \(6889, 24\)"):
        smpl.load(tmp_path / "bad.npz")
    smplx_like = dict(arrays, v_template=np.zeros((10475, 3)), lmk_faces_idx=np.zeros(3))
    np.savez(tmp_path / "smplx.npz", **smplx_like)
    with pytest.raises(ValueError, match="looks like a SMPL-X model"):
        smpl.load(tmp_path / "smplx.npz")
    mano = dict(arrays, v_template=np.zeros((778, 3)), kintree_table=np.zeros((2, 16)))
    np.savez(tmp_path / "mano.npz", **mano)
    with pytest.raises(ValueError, match="looks like a MANO model"):
        smpl.load(tmp_path / "mano.npz")
    smplh = dict(arrays, kintree_table=np.zeros((2, 52)))
    np.savez(tmp_path / "smplh.npz", **smplh)
    with pytest.raises(ValueError, match="looks like a SMPL-H model"):
        smpl.load(tmp_path / "smplh.npz")


def test_regress_joints_and_save_obj(tmp_path, model_files):
    model = smpl.load(model_files["npz"])
    out = smpl.forward(model, np.zeros((2, K)), np.zeros((2, 72)))
    j = smpl.regress_joints(model, out.vertices)
    np.testing.assert_allclose(j, out.joints, atol=1e-5)  # zero pose: joints = J_regressor @ template
    reg = np.eye(3, V, dtype=np.float32)
    np.save(tmp_path / "reg.npy", reg)
    extra = smpl.regress_joints(smpl.load_regressor(tmp_path / "reg.npy", num_vertices=V), out.vertices)
    np.testing.assert_allclose(extra, out.vertices[:, :3], atol=1e-6)
    smpl.save_obj(tmp_path / "m.obj", out.vertices[0], model.faces)
    lines = (tmp_path / "m.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == V
    assert sum(line.startswith("f ") for line in lines) == model.faces.shape[0]


def test_large_batches_are_chunked_consistently(model_files):
    model = smpl.load(model_files["npz"])
    pose, betas = random_inputs(6)
    big = smpl.forward(model, np.tile(betas, (25, 1)), np.tile(pose, (25, 1)))  # 150 > one chunk
    small = smpl.forward(model, betas, pose)
    assert big.vertices.shape == (150, V, 3)
    np.testing.assert_allclose(big.vertices[-6:], small.vertices, atol=1e-5)
    np.testing.assert_allclose(big.joints[72:78], small.joints, atol=1e-5)


def test_take_vertices_gives_those_vertices_and_the_same_joints(model_files):
    model = smpl.load(model_files["npz"])
    pose, betas = random_inputs(6)
    full = smpl.forward(model, betas, pose)
    idx = np.array([0, 3, 4, 9, V - 1])
    sub_model = smpl.take_vertices(model, idx)
    assert sub_model.num_vertices == len(idx)
    sub = jax.jit(smpl.forward)(sub_model, betas, pose)
    np.testing.assert_allclose(sub.vertices, np.asarray(full.vertices)[:, idx], atol=1e-5)
    np.testing.assert_allclose(sub.joints, full.joints, atol=1e-6)
    # faces: exactly the triangles with all three corners kept, renumbered into the subset
    faces = np.asarray(model.faces)
    kept = faces[np.all(np.isin(faces, idx), axis=1)]
    np.testing.assert_array_equal(idx[np.asarray(sub_model.faces)], kept)
    everything = smpl.take_vertices(model, np.arange(V))
    np.testing.assert_array_equal(everything.faces, model.faces)
    for bad in (
        np.array([3, 3]),
        np.array([4, 2]),
        np.array([V]),
        np.array([-1, 2]),
        np.array([], int),
        np.array([0.0, 1.0]),
    ):
        with pytest.raises(ValueError, match="take_vertices: indices"):
            smpl.take_vertices(model, bad)

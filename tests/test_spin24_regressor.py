"""tools/make_spin24_regressor.py and the (24, V + 24) 'spin24' regressor in `joints.model_joints`.

The default procedural body stands in for SMPL (its V is 6914, not 6890; SPIN's face vertex ids
are all below it, so the tool's exact SPIN ids are used as they are).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax import body_model, skeleton, smpl
from hmr_jax.data import setup as data_setup


@pytest.fixture(scope="module")
def tool(load_tool):
    """tools/make_spin24_regressor.py."""
    return load_tool("make_spin24_regressor")


@pytest.fixture(scope="module")
def model_path() -> Path:
    return body_model.default_body_model_path()


@pytest.fixture(scope="module")
def model(model_path) -> smpl.SMPLModel:
    return smpl.load(model_path)


def _random_extra(num_vertices: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    extra = rng.uniform(size=(9, num_vertices)) * (rng.uniform(size=(9, num_vertices)) < 0.01)
    return (extra / extra.sum(axis=1, keepdims=True)).astype(np.float32)


def _random_body(model: smpl.SMPLModel, batch: int = 3, seed: int = 1) -> smpl.SMPLOutput:
    rng = np.random.default_rng(seed)
    betas = jnp.asarray(rng.normal(size=(batch, 10)), jnp.float32)
    pose = jnp.asarray(rng.normal(scale=0.4, size=(batch, 72)), jnp.float32)
    return smpl.forward(model, betas, pose)


def test_tables_match_spin(tool):
    assert tool.VERTEX_IDS == {"nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583}
    for name, k in tool.SMPL_JOINTS.items():  # SPIN24 names of kinematic joints are SMPL's names
        assert skeleton.SMPL24_NAMES[k] == name
    names = set(tool.SMPL_JOINTS) | set(tool.EXTRA_ROWS) | set(tool.VERTEX_IDS)
    assert len(tool.SMPL_JOINTS) + len(tool.EXTRA_ROWS) + len(tool.VERTEX_IDS) == 24
    assert names == set(skeleton.SPIN24_NAMES)


@pytest.mark.parametrize("size_flag", ["--smpl-model", "--num-vertices"])
def test_tool_regressor_is_exact(tmp_path, model_path, model, size_flag, capsys, tool):
    v = model.num_vertices
    extra = _random_extra(v)
    np.save(tmp_path / "J_regressor_extra.npy", extra)
    out = tmp_path / "J_spin24.npy"
    size_value = str(model_path) if size_flag == "--smpl-model" else str(v)
    tool.main(
        ["--j-regressor-extra", str(tmp_path / "J_regressor_extra.npy"), size_flag, size_value, "--out", str(out)]
    )
    assert str(out) in capsys.readouterr().out

    reg = smpl.load_regressor(out, 24, v)  # what data_setup.load_regressors does (plus V)
    assert reg.shape == (24, v + 24) and reg.dtype == np.float32
    body = _random_body(model)
    got = jax.jit(lambda j, vert: smpl.model_joints("spin24", j, vert, {"spin24": jnp.asarray(reg)}))(
        body.joints, body.vertices
    )
    assert got.shape == (3, 24, 3)
    names = skeleton.SPIN24_NAMES
    for name, k in tool.SMPL_JOINTS.items():
        np.testing.assert_allclose(got[:, names.index(name)], body.joints[:, k], atol=1e-5, err_msg=name)
    want_extra = np.einsum("jv,bvc->bjc", extra, np.asarray(body.vertices, np.float64))
    for row, name in enumerate(tool.EXTRA_ROWS):
        np.testing.assert_allclose(got[:, names.index(name)], want_extra[:, row], atol=1e-5, err_msg=name)
    for name, i in tool.VERTEX_IDS.items():
        np.testing.assert_allclose(got[:, names.index(name)], body.vertices[:, i], atol=1e-5, err_msg=name)
    # Why the V + 24 columns: posed kinematic joints are not the J_regressor of the posed vertices.
    assert np.abs(smpl.regress_joints(model, body.vertices) - body.joints).max() > 1e-3


def test_trainer_passes_v_plus_24_regressor(tmp_path, model, tool):
    from types import SimpleNamespace

    path = tmp_path / "J_spin24.npy"
    np.save(path, tool.build_regressor(_random_extra(model.num_vertices), model.num_vertices))
    config = SimpleNamespace(data=SimpleNamespace(joint_regressor=str(path)))
    regs = data_setup.load_regressors(config, "spin24")
    assert regs["spin24"].shape == (24, model.num_vertices + 24)


def test_vertex_only_regressor_still_works(tmp_path, model):
    v = model.num_vertices
    reg = np.zeros((24, v), np.float32)
    reg[np.arange(24), 100 + np.arange(24)] = 1.0
    np.save(tmp_path / "reg.npy", reg)
    loaded = smpl.load_regressor(tmp_path / "reg.npy", 24, v)
    body = _random_body(model, batch=2)
    got = smpl.model_joints("spin24", body.joints, body.vertices, {"spin24": jnp.asarray(loaded)})
    np.testing.assert_allclose(got, body.vertices[:, 100:124], atol=1e-6)


def test_regressor_shape_errors(tmp_path, model):
    v = model.num_vertices
    np.save(tmp_path / "bad.npy", np.zeros((24, v + 5), np.float32))
    with pytest.raises(ValueError, match=rf"bad\.npy.*\(24, {v}\) or \(24, {v + 24}\)"):
        smpl.load_regressor(tmp_path / "bad.npy", 24, v)
    body = _random_body(model, batch=1)
    with pytest.raises(ValueError, match=rf"\(24, {v}\).*\(24, {v + 24}\)"):
        smpl.model_joints("spin24", body.joints, body.vertices, {"spin24": jnp.zeros((24, v + 5))})


def test_tool_errors(tmp_path, model, tool):
    v = model.num_vertices
    out = str(tmp_path / "out.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        tool.main(["--j-regressor-extra", str(tmp_path / "missing.npy"), "--out", out])
    np.save(tmp_path / "wrong.npy", np.zeros((8, v), np.float32))
    with pytest.raises(ValueError, match=rf"wrong\.npy.*expected shape \(9, {v}\).*found \(8, {v}\)"):
        tool.main(["--j-regressor-extra", str(tmp_path / "wrong.npy"), "--num-vertices", str(v), "--out", out])
    with pytest.raises(ValueError, match=r"wrong\.npy.*expected shape \(9, 6890\)"):  # default V = 6890
        tool.main(["--j-regressor-extra", str(tmp_path / "wrong.npy"), "--out", out])
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"junk\.npy.*not a readable"):
        tool.main(["--j-regressor-extra", str(tmp_path / "junk.npy"), "--out", out])
    np.save(tmp_path / "small.npy", _random_extra(5000))  # right shape for V = 5000, but 6260 >= V
    with pytest.raises(ValueError, match=r"right_eye.*5000 vertices"):
        tool.main(["--j-regressor-extra", str(tmp_path / "small.npy"), "--num-vertices", "5000", "--out", out])
    assert not Path(out).exists()

"""No data or model file runs code: every reader is fed a pickle that would create a marker file."""

import os

import ml_collections
import numpy as np
import pytest

from hmr_jax import mean_params, smpl
from hmr_jax.config_checks import ConfigError, check_prior_file
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import setup as data_setup
from hmr_jax.models import resnet


class _Payload:
    """Unpickling this calls os.system, which creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _evil(marker) -> np.ndarray:
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    return arr


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload in a data file ran"


def _spin_arrays(n=2):
    return {
        "imgname": np.array([f"im{i}.jpg" for i in range(n)]),
        "center": np.full((n, 2), 50.0),
        "scale": np.ones(n),
        "part": np.zeros((n, 24, 3)),
    }


def _4dhumans_arrays(n=2):
    return {
        "imgname": np.array([f"im{i}.jpg" for i in range(n)]),
        "center": np.full((n, 2), 50.0),
        "scale": np.ones(n),
        "body_keypoints_2d": np.zeros((n, 25, 3)),
        "extra_keypoints_2d": np.zeros((n, 19, 3)),
    }


@pytest.mark.parametrize("layout", ["spin", "4dhumans"])
def test_annotation_member_holding_a_pickle_is_refused(tmp_path, marker, layout):
    arrays = _spin_arrays() if layout == "spin" else _4dhumans_arrays()
    arrays["center"] = _evil(marker)
    path = tmp_path / "ann.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"ann\.npz.*'center' is a pickled object array"):
        ann_lib.load(path)
    loader = ann_lib.load_spin if layout == "spin" else ann_lib.load_4dhumans
    with pytest.raises(ValueError, match="pickled object array"):
        loader(path)


def test_4dhumans_extra_info_is_skipped_unread(tmp_path, marker):
    arrays = _4dhumans_arrays()
    arrays["extra_info"] = _evil(marker)
    path = tmp_path / "ann.npz"
    np.savez(path, **arrays)
    ann = ann_lib.load(path)
    assert len(ann) == 2
    np.testing.assert_array_equal(ann.center, np.full((2, 2), 50.0))


def test_body_model_npz_holding_a_pickle_is_refused(tmp_path, marker):
    path = tmp_path / "model.npz"
    np.savez(path, v_template=_evil(marker), f=np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match="model.npz"):
        smpl.load(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_joint_regressor_holding_a_pickle_is_refused(tmp_path, marker, suffix):
    path = tmp_path / f"regressor{suffix}"
    if suffix == ".npy":
        np.save(path, _evil(marker), allow_pickle=True)
    else:
        np.savez(path, _evil(marker))
    with pytest.raises(ValueError, match=f"regressor{suffix}"):
        smpl.load_regressor(path)


def test_encoder_weights_holding_a_pickle_are_refused(tmp_path, marker):
    path = tmp_path / "encoder.npz"
    np.savez(path, **{"params/conv/kernel": _evil(marker)})
    with pytest.raises(ValueError):
        resnet.load_encoder_params(str(path))


def test_prior_and_mean_parameter_files_holding_a_pickle_are_refused(tmp_path, marker):
    path = tmp_path / "prior.npz"
    np.savez(path, pose=_evil(marker), shape=_evil(marker))
    with pytest.raises((ValueError, ConfigError)):
        check_prior_file(str(path))
    with pytest.raises((ValueError, ConfigError)):
        data_setup.load_prior(str(path))
    config = ml_collections.ConfigDict({"model": {"mean_pose": [], "mean_betas": [], "mean_params": str(path)}})
    with pytest.raises((ValueError, ConfigError)):
        mean_params.resolve_mean_params(config, ("", "", ""))


def test_resnet_converter_refuses_a_pickled_global(tmp_path, marker, load_tool):
    torch = pytest.importorskip("torch")
    convert = load_tool("convert_resnet50_weights")
    path = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        convert.load_state_dict(path)

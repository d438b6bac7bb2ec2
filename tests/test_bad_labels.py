"""One bad label never stops a run: statistics derived from the data (the regressor's starting
mean pose and shape, the mean-pose baseline) use the rows that pass validation, as the input
pipeline does; an annotation file without usable rows is an error naming the file."""

import json
import math

import numpy as np
import pytest

from hmr_jax import mean_params, trainer
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import setup as data_setup

SHORT = {"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 0}


def _corrupt(data_dir, **rows):
    """Rewrite data_dir/annotations.npz with NaN / inf in the named arrays' given rows."""
    path = data_dir / "annotations.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key, (row, value) in rows.items():
        arrays[key] = arrays[key].astype(np.float64)
        arrays[key][row] = value
    np.savez(path, **arrays)


def test_nonfinite_pose_shape_and_joints_rows_are_skipped_not_averaged(tmp_path, make_dataset, tiny_config):
    data = tmp_path / "data"
    make_dataset(data, num=16, img_size=32)
    _corrupt(data, pose=(0, np.inf), shape=(1, np.nan), S=(2, np.nan))
    config = tiny_config(data, **SHORT)
    result = trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    assert result["step"] == 2
    with open(tmp_path / "wd" / "config.json") as f:
        model = json.load(f)["model"]
    assert len(model["mean_pose"]) == 72 and all(math.isfinite(v) for v in model["mean_pose"])
    assert len(model["mean_betas"]) == 10 and all(math.isfinite(v) for v in model["mean_betas"])
    assert all(math.isfinite(v) for v in result["eval"].values())

    # The same mean as over the valid training rows alone.
    paths = data_setup.resolve_data_paths(config, str(tmp_path / "wd"))
    pose, shape = mean_params.training_labels(config, paths)
    ann = ann_lib.load(paths[1])
    rows = ann_lib.split_indices(ann, "train", val_fraction=config.data.val_fraction)
    good = [r for r in rows if r not in (0, 1, 2)]
    np.testing.assert_array_equal(pose, ann.pose[good])
    np.testing.assert_array_equal(shape, ann.shape[good])


def test_annotation_file_with_no_rows_names_the_file(tmp_path, make_dataset, tiny_config):
    data = tmp_path / "data"
    make_dataset(data, num=16, img_size=32)
    path = data / "annotations.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: (f[k][:0] if f[k].ndim else f[k]) for k in f.files}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"annotations\.npz.*(no samples|no rows|0 rows|at least)"):
        trainer.train_and_evaluate(tiny_config(data, **SHORT), str(tmp_path / "wd"))

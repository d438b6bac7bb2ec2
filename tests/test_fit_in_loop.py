"""Fitting in the training loop (train.fit_in_loop, SPIN): the per-sample best-fit table fills for
the samples seen, is checkpointed with the state and restored on resume; hidden labels
(data.hide_labels_fraction) are hidden from the step."""

import json

import jax
import numpy as np

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import sharding, trainer
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import setup as data_setup

FIT = {
    "train.fit_in_loop": True,
    "data.hide_labels_fraction": 0.5,
    "fitting.stage1_steps": 5,
    "fitting.stage2_steps": 5,
    "train.eval_every": 0,
    "train.image_every": 0,
}


def test_hidden_labels_are_a_fixed_fraction_of_indices():
    index = np.arange(10_000)
    hidden = data_setup.hidden_labels(index, 0.5)
    assert abs(hidden.mean() - 0.5) < 0.01
    assert np.array_equal(hidden, data_setup.hidden_labels(index, 0.5))  # the same samples every call
    batch = {"index": index[:8], "has_smpl": np.ones(8, np.float32), "has_joints_3d": np.ones(8, np.float32)}
    out = data_setup.hide_labels(batch, 0.5)
    assert np.array_equal(out["has_smpl"], (~hidden[:8]).astype(np.float32))
    assert np.array_equal(out["has_joints_3d"], out["has_smpl"])
    assert data_setup.hide_labels(batch, 0.0) is batch


def test_fit_table_fills_is_checkpointed_and_resumes(tmp_path, tiny_data, tiny_config):
    workdir = tmp_path / "wd"
    config = tiny_config(tiny_data, **FIT, **{"train.num_steps": 3, "train.checkpoint_every": 3})
    result = trainer.train_and_evaluate(config, str(workdir))
    assert result["step"] == 3
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    size = saved["train"]["fit_table_size"]
    assert size == data_setup.index_space(
        config,
        data_setup.make_source(config, "train", (str(tiny_data), str(tiny_data / "annotations.npz"), str(tiny_data))),
    )
    assert 0 < size < 16  # the training split's rows of the 16-sample set
    metrics = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    fit_rows = [m for m in metrics if "fit/error_px" in m]
    assert fit_rows and all(np.isfinite(m["fit/error_px"]) for m in fit_rows)

    # The table is part of the checkpointed state: restore it and look.
    run_config = workdir_lib.load_run_config(str(workdir))
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        parts = state_lib.make_static_parts(run_config)
        manager = ckpt_lib.make_manager(str(workdir / "checkpoints"), 3)
        state, _ = ckpt_lib.restore_newest(manager, state_lib.abstract_state(run_config, parts, mesh))
    loss = np.asarray(state.fits["loss"])
    assert loss.shape == (size,)
    seen = np.isfinite(loss)
    assert 0 < seen.sum() <= 3 * config.data.batch_size  # fits for samples seen, none for the rest
    assert np.all(np.isfinite(np.asarray(state.fits["pose"])[seen]))

    # Resume: two more steps start from the saved table (no sample loses its fit).
    config = tiny_config(tiny_data, **FIT, **{"train.num_steps": 5, "train.checkpoint_every": 5})
    trainer.train_and_evaluate(config, str(workdir))
    with jax.set_mesh(mesh):
        state, _ = ckpt_lib.restore_newest(manager, state_lib.abstract_state(run_config, parts, mesh))
    after = np.asarray(state.fits["loss"])
    assert np.all(np.isfinite(after[seen])) and np.all(after[seen] <= loss[seen] + 1e-3)

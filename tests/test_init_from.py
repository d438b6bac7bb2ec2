"""model.init_from: a new run starts from another run's generator (weights and mean parameters),
with its own optimiser; a run of another architecture is refused naming the key."""

import json

import jax
import numpy as np
import pytest

from hmr_jax import config_checks, sharding, trainer
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib

SHORT = {"train.num_steps": 2, "train.eval_every": 0, "train.checkpoint_every": 0}


@pytest.fixture(scope="module")
def source_run(tiny_data, tiny_config, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("source") / "run")
    trainer.train_and_evaluate(tiny_config(tiny_data, **SHORT), workdir)
    return workdir


def test_a_run_starts_from_anothers_generator(source_run, tiny_data, tiny_config, tmp_path):
    # Another optimiser (SGD, no per-module rates): its state has another structure; only the
    # generator's weights and the mean parameters come from the source run.
    overrides = {"model.init_from": source_run, "optim.gen.name": "sgd", "optim.gen.lr_scale.regressor": 1.0}
    config = workdir_lib.start_from_run(tiny_config(tiny_data, **SHORT, **overrides), source_run)
    source_config = workdir_lib.load_run_config(source_run)
    assert config.model.mean_pose == tuple(source_config.model.mean_pose)
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        parts = state_lib.make_static_parts(config)
        fresh = state_lib.create_sharded_state(config, parts, mesh)
        started = workdir_lib.generator_weights_from_run(fresh, parts, source_run, mesh)
        source_parts = state_lib.make_static_parts(source_config)
        source, _, _, _ = workdir_lib.restore_checkpoint(source_run, source_config, source_parts, mesh, "latest")
    for got, want in zip(jax.tree.leaves(started.gen_params), jax.tree.leaves(source.gen_params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(
        jax.tree.leaves(started.gen_batch_stats), jax.tree.leaves(source.gen_batch_stats), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(started.step) == 0
    assert jax.tree.structure(started.gen_opt_state) == jax.tree.structure(fresh.gen_opt_state)

    # The whole run: trains from there and keeps the source's regressor start in its config.json.
    workdir = tmp_path / "finetune"
    result = trainer.train_and_evaluate(tiny_config(tiny_data, **SHORT, **overrides), str(workdir))
    assert result["step"] == 2
    with open(workdir / "config.json") as f:
        written = json.load(f)["model"]
    np.testing.assert_allclose(written["mean_pose"], source_config.model.mean_pose)


def test_another_architecture_is_refused_naming_the_key(source_run, tiny_data, tiny_config):
    config = tiny_config(tiny_data, **SHORT, **{"model.init_from": source_run, "model.n_iter": 3})
    with pytest.raises(config_checks.ConfigError, match=r"model\.init_from.*model\.n_iter = 2, this config 3"):
        workdir_lib.start_from_run(config, source_run)


def test_init_from_must_be_a_workdir(tiny_data, tiny_config, tmp_path):
    config = tiny_config(tiny_data, **{"model.init_from": str(tmp_path / "nowhere")})
    with pytest.raises(config_checks.ConfigError, match=r"model\.init_from"):
        config_checks.validate_config(config, 1, 1)

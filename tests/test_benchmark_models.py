"""The PyTorch side of the side-by-side benchmarks (benchmarks/torch_hmr.py) is the same model as
hmr_jax's: equal parameter and BatchNorm-statistic counts, so the speed ratios compare like with like."""

import sys

import jax
import numpy as np
import pytest

from hmr_jax import config_files
from hmr_jax import state as state_lib

torch = pytest.importorskip("torch")
pytest.importorskip("smplx")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("depth", [18, 50])
def test_torch_benchmark_model_has_hmr_jax_parameter_counts(depth, monkeypatch, repo):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    sys.modules.pop("torch_hmr", None)
    import torch_hmr  # pylint: disable=g-import-not-at-top

    config = config_files.load(repo / "configs" / "h36m_hmr.py")
    config.model.depth = depth
    models = state_lib.make_static_parts(config)
    state = jax.eval_shape(lambda key: state_lib.init_state(config, models, key), jax.random.PRNGKey(0))
    encoder, regressor = torch_hmr.generator(config)
    disc = torch_hmr.Discriminator()
    n_params = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    assert n_params(encoder, regressor) == _count(state.gen_params)
    assert n_params(disc) == _count(state.disc_params)
    n_stats = sum(b.numel() for name, b in encoder.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert n_stats == _count(state.gen_batch_stats)

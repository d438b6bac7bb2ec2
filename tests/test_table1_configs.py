"""configs/table1.py: one config per row of the report's Table 1, and tools/ablation.py's use of it."""

import types

import pytest

from hmr_jax import config_files


@pytest.fixture(scope="module")
def table1(repo):
    """configs/table1.py."""
    return repo / "configs" / "table1.py"


def _flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _changes(table1, arg):
    base = _flat(config_files.load(table1.parent / "h36m_hmr.py"))
    row = _flat(config_files.load(table1, arg))
    return {k: v for k, v in row.items() if base.get(k, "<missing>") != v}


def test_rows_change_the_base_as_documented(table1):
    no_prior = {"data.resample_ratio": 1.0, "loss_weights.adversarial": 0.0, "adversarial.disc_loss_weight": 0.0}
    linear = dict(no_prior, **{"model.hidden": (), "model.n_iter": 1, "model.dropout": 0.0})
    sgd = {"model.depth": 18, "optim.gen.name": "sgd", "optim.gen.learning_rate": 1e-3}  # momentum 0.9: as the base
    assert _changes(table1, "resample") == {}
    assert _changes(table1, "adversarial") == {"data.resample_ratio": 1.0}
    assert _changes(table1, "iterative") == no_prior
    assert _changes(table1, "resnet50") == linear
    assert _changes(table1, "resnet18") == dict(linear, **sgd)
    assert _changes(table1, "linear_default") == dict(
        linear, **sgd, **{"model.width": 16, "data.augment.enabled": False}
    )


@pytest.mark.parametrize("arg", [None, "gan", "table1_gan"])
def test_unknown_row_is_refused(arg, table1):
    with pytest.raises(ValueError, match="row name"):
        config_files.load(table1, arg)


def test_ablation_rows_name_table1_rows(monkeypatch, load_tool, table1):
    tool = load_tool("ablation")
    monkeypatch.setattr(tool, "common_overrides", lambda args: [])
    args = types.SimpleNamespace(resnet_width=0, resnet_depth=0, set=[])
    for row in tool.ROWS:
        cmd = tool.train_command(row, "/tmp/w", args)
        assert cmd[3] == f"--config={table1}:{row.config}"
        config_files.load(table1, row.config)

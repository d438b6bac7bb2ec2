"""evaluate on other data than the run trained on: `data` overrides (`--data KEY=VALUE`)."""

import pytest

from hmr_jax import config_checks, evaluation


def test_evaluates_another_folder_whole(trained_workdir, make_dataset, tmp_path):
    other = tmp_path / "other"
    make_dataset(other, num=12, img_size=32)
    report = evaluation.evaluate(
        trained_workdir["workdir"],
        split="all",
        checkpoint="latest",
        data={"dir": str(other)},
        out_path=str(tmp_path / "report.json"),
        progress=False,
    )
    assert report["annotations"] == str(other / "annotations.npz")
    assert report["model"]["count"]["valid"] == 12  # every row of the other file, none of the run's
    assert report["model"]["mpjpe"] > 0


def test_an_unknown_or_mistyped_data_key_names_it(trained_workdir):
    config = trained_workdir["config"]
    before = config.data.eval_batch_size
    with pytest.raises(config_checks.ConfigError, match=r"--data annotaions=x\.npz: no data\.annotaions"):
        evaluation.override_data(config, {"annotaions": "x.npz"})
    with pytest.raises(config_checks.ConfigError, match=r"--data eval_batch_size=many: expected a int"):
        evaluation.override_data(config, {"eval_batch_size": "many"})
    assert evaluation.override_data(config, {"eval_batch_size": "4"}).data.eval_batch_size == 4
    assert config.data.eval_batch_size == before  # a copy: the run's own config is unchanged

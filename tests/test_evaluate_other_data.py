"""evaluate on other data than the run trained on: `data` overrides (`--data KEY=VALUE`)."""

import numpy as np
import pytest

from hmr_jax import body_model, config_checks, evaluation


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


def _gendered_annotations(trained_workdir, tmp_path, genders):
    """The run's annotation file with a `gender` column (as SPIN's 3dpw_test.npz), as an absolute path."""
    src = trained_workdir["data_dir"] / "annotations.npz"
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    n = len(arrays["imgname"])
    arrays["gender"] = np.array([genders[i % len(genders)] for i in range(n)])
    path = tmp_path / "gendered.npz"
    np.savez(path, **arrays)
    return str(path)


def test_gendered_ground_truth_uses_each_samples_body_model(trained_workdir, tmp_path):
    """3DPW-style files: each sample's ground-truth mesh comes from its gender's model."""
    neutral = str(body_model.default_body_model_path())
    other = str(body_model.write_body_model(tmp_path / "other.npz", seed=3))

    def run(genders, male, female, name):
        return evaluation.evaluate(
            trained_workdir["workdir"],
            split="all",
            checkpoint="latest",
            data={"annotations": _gendered_annotations(trained_workdir, tmp_path, genders)},
            body_model_male=male,
            body_model_female=female,
            out_path=str(tmp_path / f"{name}.json"),
            progress=False,
        )

    plain = evaluation.evaluate(
        trained_workdir["workdir"], split="all", checkpoint="latest", out_path=str(tmp_path / "p.json"), progress=False
    )
    # every sample female, the female model the run's own: the same numbers as without genders
    same = run(["f"], other, neutral, "same")
    assert same["model"]["pve"] == pytest.approx(plain["model"]["pve"], rel=1e-6)
    # every sample male, the male model another body: other ground-truth meshes, other PVE
    moved = run(["m"], other, neutral, "moved")
    assert abs(moved["model"]["pve"] - plain["model"]["pve"]) > 1.0  # mm
    assert moved["ground_truth_body_models"] == {"male": other, "female": neutral}
    # genders named but no models given: the run's model for all, and the report says so
    noted = run(["m", "f"], None, None, "noted")
    assert noted["model"]["pve"] == pytest.approx(plain["model"]["pve"], rel=1e-6)
    assert "no --body-model-male" in noted["ground_truth_body_models"]
    with pytest.raises(ValueError, match="give both"):
        run(["m"], other, None, "half")

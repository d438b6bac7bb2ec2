"""hmr_jax.evaluate: report over a tiny run (H36M-style names), consistency with the trainer's
validation, mean-pose baseline, Human3.6M protocol selection, errors."""

import json
import math
import os

import jax
import numpy as np
import pytest

from hmr_jax import body_model, evaluation, mean_params, sharding, smpl, steps
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import setup as data_setup


def _make_h36m_regressor(path, num_vertices: int, seed: int = 0) -> str:
    """A (17, V) regressor: each joint the mean of 8 random vertices (rows sum to 1)."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((17, num_vertices), np.float32)
    for j in range(17):
        reg[j, rng.choice(num_vertices, 8, replace=False)] = 1.0 / 8
    np.save(path, reg)
    return str(path)


@pytest.fixture(scope="module")
def run(trained_workdir):
    """The trained run (workdir, data_dir, config, expected) and its evaluation report (best checkpoint)."""
    workdir = trained_workdir["workdir"]
    n_vertices = smpl.load(body_model.default_body_model_path()).num_vertices
    reg = _make_h36m_regressor(os.path.join(workdir, "J_regressor_h36m.npy"), n_vertices)
    report = evaluation.evaluate(workdir, split="validation", checkpoint="best", h36m_regressor=reg, progress=False)
    return dict(trained_workdir, report=report)


def _finite_summary(s):
    for m in evaluation.METRICS:
        assert s[m] is not None and math.isfinite(s[m]), (m, s)
    assert 0.0 <= s["pose_outside_limits"] <= 1.0


def test_report_written_with_expected_keys(run):
    report = run["report"]
    path = os.path.join(run["workdir"], "eval", "validation_step3.json")
    assert report["output"] == path and os.path.isfile(path)
    with open(path) as f:
        saved = json.load(f)
    for key in (
        "model",
        "baseline",
        "train_mean_baseline",
        "per_action",
        "h36m",
        "checkpoint",
        "units",
        "mean_params",
        "joint_set",
    ):
        assert key in saved, key
    assert saved["checkpoint"] == {"requested": "best", "step": 3, "loaded": "best"}
    _finite_summary(saved["model"])
    _finite_summary(saved["baseline"])
    assert saved["model"]["count"] == {
        "valid": run["expected"]["validation"],
        "joints": run["expected"]["validation"],
        "smpl": run["expected"]["validation"],
    }
    assert saved["model"]["v2v_l2"] != saved["baseline"]["v2v_l2"]  # the model is not the mean
    text = evaluation.format_table(report)
    assert "mean-pose baseline" in text and "Protocol 1" in text and "Directions" in text


def _trainer_validation(config, workdir):
    """The trainer's eval_step sums over the validation split + finalize_eval (latest checkpoint)."""
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        models = state_lib.make_static_parts(config)
        state, _, step, _ = workdir_lib.restore_checkpoint(workdir, config, models, mesh, "latest")
        assert step == 3
        paths = data_setup.resolve_data_paths(config, workdir)
        source = data_setup.make_source(config, "validation", paths)
        smpl_model = sharding.replicate(smpl.load(body_model.default_body_model_path()), mesh)
        baseline = sharding.replicate(mean_params.training_mean(config, paths), mesh)
        step_fn = jax.jit(steps.make_eval_step(config, models, "smpl24"))
        sums = None
        for batch in data_setup.make_input(config, source, train=False):
            arrays = data_setup.step_arrays(batch)
            out = jax.device_get(step_fn(state, sharding.to_global(arrays, mesh), smpl_model, None, baseline))
            sums = out if sums is None else {k: sums[k] + out[k] for k in out}
    return steps.finalize_eval(sums)


def _assert_matches(report, expected):
    for m in ("mpjpe", "pa_mpjpe", "pve", "v2v_l2"):
        np.testing.assert_allclose(report["model"][m], expected[f"val/{m}"], rtol=1e-4, err_msg=m)
        np.testing.assert_allclose(
            report["train_mean_baseline"][m], expected[f"val/mean_baseline/{m}"], rtol=1e-4, err_msg=m
        )


def test_model_metrics_match_trainer_validation(run):
    """The per-sample step averaged over the split == the trainer's eval_step sums + finalize_eval."""
    assert run["report"]["flip_test"] is False  # the run's config: eval.flip_test off
    _assert_matches(run["report"], _trainer_validation(run["config"], run["workdir"]))


def test_flip_test_in_evaluate_matches_trainer_validation(run, tmp_path):
    """--flip_test: evaluate's numbers == the trainer's validation with config eval.flip_test, and
    they differ from the plain prediction's (the mirrored prediction is averaged in)."""
    report = evaluation.evaluate(
        run["workdir"],
        split="validation",
        checkpoint="latest",
        progress=False,
        out_path=str(tmp_path / "flip.json"),
        flip_test=True,
    )
    assert report["flip_test"] is True and "flip test" in evaluation.format_table(report)
    config = run["config"].copy_and_resolve_references()
    config.eval.flip_test = True
    _assert_matches(report, _trainer_validation(config, run["workdir"]))
    for m in ("mpjpe", "pa_mpjpe", "pve"):
        assert report["model"][m] != pytest.approx(run["report"]["model"][m], rel=1e-6), m
    assert report["train_mean_baseline"] == run["report"]["train_mean_baseline"]


def test_baseline_is_the_regressor_mean(run):
    mean = run["report"]["mean_params"]
    np.testing.assert_allclose(mean["cam"], [0.9, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(mean["betas"], np.zeros(10), atol=1e-6)
    rot = np.asarray(mean["pose_rotmat"])
    np.testing.assert_allclose(rot[0], np.diag([1.0, -1.0, -1.0]), atol=1e-5)  # 180 deg about x
    np.testing.assert_allclose(rot[1:], np.broadcast_to(np.eye(3), (23, 3, 3)), atol=1e-5)
    assert run["report"]["baseline"]["pose_outside_limits"] == 0.0


def test_per_action_and_h36m_protocols(run):
    report = run["report"]
    counts = {a: s["model"]["count"]["valid"] for a, s in report["per_action"].items()}
    assert counts == run["expected"]["actions"]
    h = report["h36m"]
    assert "note" not in h
    assert h["p1"]["model"]["count"] == run["expected"]["p1"]
    assert h["p2"]["model"]["count"] == run["expected"]["p2"]
    for p in ("p1", "p2"):
        for who in ("model", "baseline"):
            for m in ("mpjpe", "pa_mpjpe"):
                assert math.isfinite(h[p][who][m]) and h[p][who][m] >= 0.0
        assert h[p]["model"]["pa_mpjpe"] <= h[p]["model"]["mpjpe"] + 1e-3


def test_protocol_masks_and_actions():
    rows = [dict(subject="S9", action="Directions_1", camera="60457274", frame=f) for f in (1, 3, 6)]
    rows += [
        dict(subject="S11", action="Eating", camera="54138969", frame=10),
        dict(subject="S1", action="Eating", camera="60457274", frame=1),
    ]
    masks = evaluation.h36m_protocol_masks(rows)
    np.testing.assert_array_equal(masks["p1"], [True, False, True, True, False])
    np.testing.assert_array_equal(masks["p2"], [True, False, True, False, False])
    assert evaluation.h36m_protocol_masks([dict(subject="S9", action="x", camera="1")]) is None  # no frame
    assert evaluation.canonical_action("Directions_1") == "Directions"
    assert evaluation.canonical_action("TakingPhoto") == "Photo"
    assert evaluation.canonical_action("WalkingDog 1") == "WalkDog"


def test_errors_name_the_problem(run, tmp_path):
    with pytest.raises(ValueError, match=r"step 99 .* found steps \[3\]"):
        evaluation.evaluate(run["workdir"], checkpoint="99", progress=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluation.evaluate(str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="--checkpoint"):
        workdir_lib.parse_checkpoint("first")
    bad = tmp_path / "empty.npy"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="h36m-regressor"):
        evaluation.load_h36m_regressor(str(bad))

"""Damaged checkpoints and full disks: one line naming the checkpoint and the cause, training resumes
from the newest checkpoint that restores, a failed save stops the run at once; metrics.jsonl keeps
each step's rows once across resumes."""

import errno
import json
import logging
import os
import pathlib
import shutil

import jax
import pytest
from orbax.checkpoint._src.serialization import serialization as orbax_serialization

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import sharding, trainer, workdir
from hmr_jax import state as state_lib

SHORT = {"train.num_steps": 20, "train.eval_every": 10, "train.checkpoint_every": 10, "train.log_every": 5}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory, tiny_config):
    """A finished 20-step run with checkpoints at steps 10 and 20 (copied by each test)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    trainer.train_and_evaluate(tiny_config(tiny_data, **SHORT), str(run))
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20"]
    return run


def _copy(trained, tmp_path) -> pathlib.Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _damage(step_dir: pathlib.Path, how: str) -> str:
    """Damages the largest array data file of a checkpoint; returns its path inside the step."""
    big = max((p for p in (step_dir / "state").rglob("d/*") if p.is_file()), key=lambda p: p.stat().st_size)
    size = big.stat().st_size
    if how == "truncated":
        with open(big, "r+b") as f:
            f.truncate(size // 2)
    elif how == "deleted":
        big.unlink()
    elif how == "zero-length":
        big.write_bytes(b"")
    elif how == "bit-flipped":  # in the middle of the array bytes: zstd / TensorStore do not notice it
        raw = bytearray(big.read_bytes())
        raw[size // 2] ^= 0x10
        big.write_bytes(bytes(raw))
    return str(big.relative_to(step_dir))


@pytest.fixture(scope="module")
def restore(tiny_data, tiny_config):
    """`restore(run, which="latest")`: what evaluate / predict restore of the run (its config: SHORT)."""

    def restore_checkpoint(run, which="latest"):
        config = tiny_config(tiny_data, **SHORT)
        mesh = sharding.make_mesh()
        with jax.set_mesh(mesh):
            return workdir.restore_checkpoint(str(run), config, state_lib.make_static_parts(config), mesh, which)

    return restore_checkpoint


HOW = ["truncated", "deleted", "zero-length", "bit-flipped"]


@pytest.mark.parametrize("how", HOW)
def test_evaluate_and_predict_restore_names_the_damaged_checkpoint_and_the_others(
    trained, restore, tmp_path, how, capfd
):
    run = _copy(trained, tmp_path)
    damaged_file = _damage(run / "checkpoints" / "20", how)
    capfd.readouterr()
    for which in ("latest", "best"):  # eval_every=10: the best is the latest (20) or 10
        best_step = json.loads((run / "checkpoints/20/meta/metadata").read_text())["best_step"]
        if which == "best" and best_step != 20:
            state, _, step, _ = restore(run, which)  # the best (10) is intact
            assert step == 10
            continue
        with pytest.raises(ValueError) as e:
            restore(run, which)
        message = str(e.value)
        assert "\n" not in message
        assert f"checkpoints/20 is damaged: {damaged_file}" in message
        assert "other checkpoints there: steps 10" in message
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]


def test_damage_without_checksums_is_summarised_from_orbax_error(trained, restore, tmp_path, capfd):
    """A checkpoint without checksums (written before they existed): orbax's failure in one line."""
    run = _copy(trained, tmp_path)
    (run / "checkpoints/20" / ckpt_lib.CHECKSUMS).unlink()
    _damage(run / "checkpoints" / "20", "deleted")
    capfd.readouterr()
    with pytest.raises(ckpt_lib.CheckpointCorruptError) as e:
        restore(run)
    assert "\n" not in str(e.value) and "checkpoints/20 is damaged: " in str(e.value)
    assert len(str(e.value)) < 600
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_training_resumes_from_the_newest_checkpoint_that_restores(
    trained, tiny_data, tmp_path, how, caplog, tiny_config, restore
):
    """The damaged latest (20) is skipped with a warning and kept as 20.damaged; training goes on
    from 10, logs each step once per kind of row (rows the killed run wrote past the checkpoint
    are dropped), and saves a new 20 and 30."""
    run = _copy(trained, tmp_path)
    _damage(run / "checkpoints" / "20", how)
    with open(run / "metrics.jsonl", "a") as f:  # the killed run got further than its checkpoint
        f.write(json.dumps({"step": 25, "loss/total": 1.0}) + "\n")
    with caplog.at_level(logging.WARNING):
        result = trainer.train_and_evaluate(tiny_config(tiny_data, **{**SHORT, "train.num_steps": 30}), str(run))
    assert result["step"] == 30
    assert any(
        "Skipping checkpoint" in r.getMessage() and "checkpoints/20 is damaged" in r.getMessage()
        for r in caplog.records
    )
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20", "20.damaged", "30"]
    rows = _rows(run)
    train = [r["step"] for r in rows if "loss/total" in r]
    evals = [r["step"] for r in rows if "val/mpjpe" in r]
    assert train == [5, 10, 15, 20, 25, 30]
    assert evals == [10, 20, 30]
    assert restore(run)[2] == 30  # the new 20 and 30 have checksums and restore


def test_every_checkpoint_damaged_is_one_error_naming_each(trained, tiny_data, tmp_path, tiny_config):
    run = _copy(trained, tmp_path)
    for step in ("10", "20"):
        _damage(run / "checkpoints" / step, "zero-length")
    before = sorted(os.listdir(run / "checkpoints"))
    with pytest.raises(ckpt_lib.CheckpointCorruptError, match=r"no checkpoint in .* restores: .*/20 .*/10 .*empty"):
        trainer.train_and_evaluate(tiny_config(tiny_data, **{**SHORT, "train.num_steps": 30}), str(run))
    assert sorted(os.listdir(run / "checkpoints")) == before


def test_disk_full_stops_the_run_at_once_with_one_line(tiny_data, tmp_path, monkeypatch, capfd, tiny_config, restore):
    """The background save of step 20 fails with ENOSPC: the run stops before its next save with
    one line (file system, size), leaves no temporary folder and the checkpoint of step 10
    restores."""
    real = orbax_serialization.async_serialize_from_host

    async def full_disk(rslices, spec, **kwargs):
        if f"{os.sep}20.orbax-checkpoint-tmp" in json.dumps(spec):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(rslices, spec, **kwargs)

    monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", full_disk)
    run = tmp_path / "run"
    capfd.readouterr()
    config = tiny_config(tiny_data, **{**SHORT, "train.num_steps": 40, "train.eval_every": 0})
    with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
        trainer.train_and_evaluate(config, str(run))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("no space left on /") and "the checkpoint needed ~" in message, message
    assert "earlier checkpoints (10) are intact" in message
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    assert sorted(os.listdir(run / "checkpoints")) == ["10"]  # no *.orbax-checkpoint-tmp left
    assert max(r["step"] for r in _rows(run)) < 30  # stopped before the next save
    monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", real)
    assert restore(run)[2] == 10

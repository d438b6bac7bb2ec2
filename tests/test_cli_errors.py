"""hmr_jax.train: flag and config-override errors, and data errors, are one line (`error: ...`),
not a traceback; a bug elsewhere keeps its traceback."""

import os
import subprocess
import sys
from unittest import mock

import pytest
from absl import flags
from absl.testing import flagsaver

from hmr_jax import train, trainer
from hmr_jax.data import annotations as ann_lib


@pytest.fixture(scope="module")
def quickstart(repo) -> str:
    """configs/quickstart.py, the config these runs name."""
    return str(repo / "configs" / "quickstart.py")


def _flags(argv):
    """train.parse_flags(argv) as the CLI runs it (config_flags reads its overrides from sys.argv)."""
    with mock.patch.object(sys, "argv", argv):
        return train.parse_flags(argv)


def _parse(capsys, config, *args):
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as info:
            _flags(["train", f"--config={config}", "--workdir=/nonexistent/wd", *args])
    err = capsys.readouterr().err.strip()
    return info.value.code, err


def test_unknown_config_key_is_one_line(capsys, quickstart):
    code, err = _parse(capsys, quickstart, "--config.train.foo=1")
    assert code == 2 and err == f"error: --config.train.foo: no such key in the config {quickstart} (it is locked)"
    code, err = _parse(capsys, quickstart, "--config.train.num_step=3")
    assert code == 2 and "\n" not in err
    assert err.startswith("error: --config.train.num_step: no such key") and 'Did you mean "num_steps"' in err
    code, err = _parse(capsys, quickstart, "--config.trian.num_steps=3")
    assert code == 2 and "\n" not in err and err.startswith("error: --config.trian.num_steps: no such key")


def test_wrong_type_missing_file_and_missing_flag_are_one_line(capsys, quickstart):
    code, err = _parse(capsys, quickstart, "--config.train.num_steps=abc")
    assert code == 2 and "\n" not in err and err.startswith("error: ") and "--config.train.num_steps=abc" in err
    code, err = _parse(capsys, "configs/no_such_config.py")
    assert code == 2 and "\n" not in err, err
    assert err.startswith("error: --config=configs/no_such_config.py: could not load it") and "No such file" in err
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as info:
            _flags(["train", f"--config={quickstart}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "--workdir" in err


def test_valid_overrides_parse(capsys, quickstart):
    with flagsaver.flagsaver():
        rest = _flags(["train", f"--config={quickstart}", "--workdir=/tmp/wd", "--config.train.num_steps=7"])
        assert rest == ["train"] and flags.FLAGS.config.train.num_steps == 7
    assert capsys.readouterr().err == ""


def test_data_errors_are_one_line_and_other_errors_keep_their_traceback(capsys, monkeypatch, quickstart):
    def data_error(*args, **kwargs):
        ann_lib.from_arrays({}, "broken.npz")  # raises in hmr_jax.data: a missing field

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    with pytest.raises((KeyError, ValueError)) as info:
        data_error()
    assert train.raised_by_data(info.value)
    with pytest.raises(ValueError) as info:
        bug()
    assert not train.raised_by_data(info.value)
    with flagsaver.flagsaver():
        _flags(["train", f"--config={quickstart}", "--workdir=/nonexistent/wd"])
        monkeypatch.setattr(train, "_initialize_distributed", lambda: None)
        monkeypatch.setattr(trainer, "train_and_evaluate", data_error)
        with pytest.raises(SystemExit) as exit_info:
            train.main(["train"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: broken.npz") and "\n" not in err, err
        monkeypatch.setattr(trainer, "train_and_evaluate", bug)
        with pytest.raises(ValueError, match="a bug"):
            train.main(["train"])


@pytest.mark.slow
def test_cli_unknown_key_exits_2_with_one_line(tmp_path, cache_env, repo, quickstart):
    proc = subprocess.run(
        [sys.executable, "-m", "hmr_jax.train", f"--config={quickstart}", f"--workdir={tmp_path / 'wd'}"]
        + ["--config.train.foo=1"],
        capture_output=True,
        text=True,
        env={**os.environ, **cache_env(), "HMR_JAX_HUGEPAGES": "0"},
        cwd=str(repo),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --config.train.foo: no such key in the config {quickstart} (it is locked)"]
    assert not (tmp_path / "wd").exists()

"""`python -m hmr_jax.train` end to end: outputs, SIGKILL + resume, SIGTERM, NaN stop."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

pytestmark = pytest.mark.slow  # end-to-end runs in subprocesses


STEPS = 20  # the tiny config's train.num_steps


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, make_dataset):
    d = tmp_path_factory.mktemp("data")
    make_dataset(d, num=40, img_size=32)
    return d


@pytest.fixture(scope="module")
def env(cache_env, repo):
    """The subprocesses' environment: one CPU device (same programs in every run here), the repo importable."""
    env = dict(os.environ, **cache_env())
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def start(env, tiny_cli_args, repo):
    """`start(data_dir, workdir, **overrides)`: `python -m hmr_jax.train` of the tiny config, started."""

    def start_train(data_dir, workdir, **overrides):
        cmd = [sys.executable, "-m", "hmr_jax.train", *tiny_cli_args(data_dir, workdir, **overrides)]
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    return start_train


def _run(start, data_dir, workdir, timeout=300, **overrides):
    proc = start(data_dir, workdir, **overrides)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _final_params(workdir, step):
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]


def _wait_for(predicate, proc, timeout, poll=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def _steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def full_run(start, data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    code, out = _run(start, data_dir, workdir, **{"train.image_every": 10})
    assert code == 0, out[-3000:]
    return workdir, out


def test_cli_end_to_end_outputs(full_run, env):
    wd, out = full_run
    # Its own log lines show; orbax's INFO chatter (several lines per save) does not.
    assert "logging_writer.py" in out and "Done: {'step': 20" in out, out[-3000:]
    orbax_info = [line for line in out.splitlines() if line.startswith("I") and "checkpoint_manager.py" in line]
    assert not orbax_info, orbax_info[:3]
    assert STEPS in _steps(wd)
    config = json.loads((wd / "config.json").read_text())
    assert config["data"]["img_size"] == 32 and config["model"]["width"] == 8
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss/total" in r]
    val_rows = [r for r in rows if "val/mpjpe" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    assert [r["step"] for r in val_rows] == [10, 20]
    for key in (
        "grad_norm/gen",
        "grad_norm/disc",
        "param_norm/gen",
        "disc/real_mean",
        "disc/fake_mean",
        "lr/gen",
        "lr/disc",
        "loss/adversarial",
        "loss/disc",
        "perf/images_per_sec",
    ):
        assert key in train_rows[-1], key
    assert (wd / "curves.png").stat().st_size > 0
    assert sorted(os.listdir(wd / "images")) == ["step_0000010.png", "step_0000020.png"]
    # The resolved config file is itself a config file.
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; c = runpy.run_path('config.py')['get_config']();assert c.data.img_size == 32",
        ],
        cwd=wd,
        env=env,
        capture_output=True,
    )
    assert code.returncode == 0, code.stderr


def test_sigkill_then_resume_matches_uninterrupted_run(start, data_dir, full_run, tmp_path):
    workdir = tmp_path / "killed"
    # Same training as `full_run` (constant learning rate: num_steps changes nothing before
    # step 20), checkpoints every 3 steps; killed as soon as one exists (orbax finalises a step
    # directory atomically, so a kill mid-save leaves only complete checkpoints).
    proc = start(data_dir, workdir, **{"train.checkpoint_every": 3, "train.num_steps": 100000})
    assert _wait_for(lambda: _steps(workdir), proc, timeout=240, poll=0.05), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = max(_steps(workdir))
    assert killed_at < STEPS, f"killed only at step {killed_at}: nothing left to resume"
    code, out = _run(start, data_dir, workdir)
    assert code == 0, out[-3000:]
    assert "Resumed" in out and STEPS in _steps(workdir)
    expected = _final_params(full_run[0], STEPS)
    found = _final_params(workdir, STEPS)
    flat_e, flat_f = _leaves(expected), _leaves(found)
    assert flat_e.keys() == flat_f.keys()
    for k in flat_e:
        np.testing.assert_allclose(flat_f[k], flat_e[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _leaves(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_leaves(v, f"{prefix}/{i}"))
    elif tree is not None:
        out[prefix] = np.asarray(tree)
    return out


def test_sigterm_saves_and_exits_cleanly(start, data_dir, tmp_path):
    workdir = tmp_path / "term"
    proc = start(
        data_dir,
        workdir,
        **{"train.num_steps": 100000, "train.eval_every": 0, "train.checkpoint_every": 0, "early_stopping.patience": 0},
    )
    metrics = workdir / "metrics.jsonl"
    assert _wait_for(metrics.exists, proc, timeout=240), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    steps = _steps(workdir)
    assert steps and 5 <= steps[-1] < 100000


def test_nan_stop_names_step_and_term(start, data_dir, tmp_path):
    code, out = _run(
        start,
        data_dir,
        tmp_path / "nan",
        **{
            "optim.gen.name": "sgd",
            "optim.gen.learning_rate": 1e30,
            "train.log_every": 1,
            "train.eval_every": 0,
            "early_stopping.patience": 0,
        },
    )
    assert code == 1, out[-3000:]
    # lr 1e30: the parameters overflow in the first update, the losses follow a step later.
    assert re.search(r"non-finite training values at step 1: param_norm/gen=inf", out), out[-3000:]

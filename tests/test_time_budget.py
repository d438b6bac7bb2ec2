"""The run's length at run time: learning-rate schedules of a traced length, train.time_budget_min."""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import optim, sharding, time_budget, trainer

_IMPORTED = time.time()


def _optax_reference(opt, num_steps):
    """The schedules as optax builds them (the reference for `optim.learning_rate`)."""
    lr, warmup = opt.learning_rate, opt.warmup_steps
    if opt.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(num_steps, warmup + 1), end_value=lr * opt.end_factor
        )
    if opt.schedule == "warmup_linear":
        main = optax.linear_schedule(lr, lr * opt.end_factor, max(num_steps - warmup, 1))
    elif opt.schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        main = optax.exponential_decay(lr, opt.decay_every, opt.decay_factor, staircase=True)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup]) if warmup else main


@pytest.mark.parametrize("schedule", ["warmup_cosine", "warmup_linear", "constant", "step"])
@pytest.mark.parametrize("warmup", [0, 25])
def test_learning_rate_equals_optax_schedules_also_with_a_traced_length(schedule, warmup, tiny_config):
    opt = tiny_config("/unused").optim.gen
    opt.update(
        schedule=schedule, warmup_steps=warmup, learning_rate=3e-3, end_factor=0.05, decay_every=40, decay_factor=0.3
    )
    counts = np.arange(0, 260)
    traced = jax.jit(jax.vmap(lambda c, n: optim.learning_rate(opt, c, n), in_axes=(0, None)))
    for num_steps in (200, 120):
        ref = np.array([float(_optax_reference(opt, num_steps)(c)) for c in counts])
        np.testing.assert_allclose(np.asarray(optim.learning_rate(opt, counts, num_steps)), ref, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(np.asarray(traced(counts, jnp.int32(num_steps))), ref, rtol=1e-5, atol=1e-9)


def test_train_step_follows_the_run_length_in_the_state(tiny_data, fixed_batch, tiny_config, train_parts):
    """The step's learning rate is the schedule of `state.num_steps`: at the end of a cosine to 0 the
    update is exactly zero (AdamW's decay included); a longer run at the same step still moves."""
    config = tiny_config(
        tiny_data,
        **{
            "optim.gen.schedule": "warmup_cosine",
            "optim.gen.warmup_steps": 2,
            "optim.gen.end_factor": 0.0,
            "loss_weights.adversarial": 0.0,
            "adversarial.disc_loss_weight": 0.0,
        },
    )
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        _, state, body, step = train_parts(config, mesh)
        batch = sharding.to_global(fixed_batch(tiny_data), mesh)
        for n, moves in ((7, False), (50, True)):
            s = dataclasses.replace(
                state, step=sharding.replicate(np.int32(7), mesh), num_steps=sharding.replicate(np.int32(n), mesh)
            )
            new, metrics = step(s, batch, body, None, None)
            expected = float(optim.learning_rate(config.optim.gen, 7, n))
            assert float(metrics["lr/gen"]) == pytest.approx(expected, rel=1e-6)
            change = max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(new.gen_params), jax.tree.leaves(state.gen_params))
            )
            assert (change > 0) == moves, (n, change)


def test_steps_within_budget_counts_steps_evaluations_and_images():
    kw = dict(
        step=100,
        step_seconds=0.5,
        floor=100,
        cap=10_000,
        eval_every=100,
        final_eval=True,
        eval_seconds=4.0,
        image_every=0,
        image_seconds=0.0,
    )
    # 100 more steps (50 s) + the evaluation at 200 (4 s) = 54 s; 101 steps would add one more eval too
    assert time_budget.steps_within_budget(seconds_left=54.0, **kw) == 200
    assert time_budget.steps_within_budget(seconds_left=53.9, **kw) == 199  # 99 steps + the final eval: 53.5 s
    assert time_budget.steps_within_budget(seconds_left=1e9, **kw) == 10_000  # the cap
    assert time_budget.steps_within_budget(seconds_left=-5.0, **kw) == 100  # nothing fits: stop now
    # image grids at every 50th step: 2 per 100 steps
    with_images = dict(kw, image_every=50, image_seconds=3.0)
    assert time_budget.steps_within_budget(seconds_left=60.0, **with_images) == 200
    no_eval = dict(kw, eval_every=0, final_eval=False)
    assert time_budget.steps_within_budget(seconds_left=50.0, **no_eval) == 200


def test_budget_planner_waits_for_timings_then_follows_the_speed(tiny_config):
    config = tiny_config(
        "/unused",
        **{"train.time_budget_min": 1.0, "train.num_steps": 10_000, "train.eval_every": 0, "train.image_every": 0},
    )
    now = 1000.0
    planner = time_budget.BudgetPlanner(config, start_time=now, final_eval=False)
    for seconds in (30.0, 0.1, 0.1):  # the first window holds the compilation
        planner.window(seconds)
        assert planner.plan(step=20, num_steps=10_000, now=now) is None
    planner.window(0.1)
    left = planner.MARGIN * 60.0 - planner.TAIL_SECONDS
    fits = lambda step_seconds: max(k for k in range(10_000) if k * step_seconds <= left)  # noqa: E731
    assert planner.plan(step=20, num_steps=10_000, now=now) == 20 + fits(0.1)
    for _ in range(planner.WINDOWS):
        planner.window(0.2)  # the machine slowed down: shorter
    assert planner.plan(step=20, num_steps=20 + fits(0.1), now=now) == 20 + fits(0.2)
    for _ in range(planner.WINDOWS):
        planner.window(0.1)  # and sped up again: longer again
    assert planner.plan(step=20, num_steps=20 + fits(0.2), now=now) == 20 + fits(0.1)
    # about as long as planned (within GROW) or the cap: unchanged
    assert planner.plan(step=20, num_steps=20 + fits(0.1) - 1, now=now) is None
    assert planner.plan(step=20, num_steps=30, now=now + 3600.0) == 20  # past the deadline: stop now


def test_run_length_from_the_budget_is_kept_on_resume(tiny_data, tmp_path, tiny_config):
    """A budget already spent (the clock started an hour ago) ends the run at its first plan, with
    a final evaluation and checkpoint; resuming keeps that length; without a budget the config's
    num_steps is the length again (a run can be extended)."""
    workdir = str(tmp_path / "run")
    over = {"train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 0}
    spent = tiny_config(tiny_data, **over, **{"train.time_budget_min": 1.0})
    first = trainer.train_and_evaluate(spent, workdir, start_time=time.time() - 3600.0)
    planned = 1 + time_budget.BudgetPlanner.WARMUP_WINDOWS  # log windows of one step each
    assert first["step"] == planned and int(first["state"].num_steps) == planned
    manager = ckpt_lib.make_manager(f"{workdir}/checkpoints", 1)
    assert manager.latest_step() == planned
    assert ckpt_lib.restore(manager, ckpt_lib.abstract_like(first["state"]))[1]["budget_planned"] is True
    again = trainer.train_and_evaluate(spent, workdir)  # budget ample now, but the length is planned
    assert again["step"] == planned
    unbudgeted = tiny_config(tiny_data, **over, **{"train.num_steps": planned + 3})
    extended = trainer.train_and_evaluate(unbudgeted, workdir)
    assert extended["step"] == planned + 3 and int(extended["state"].num_steps) == planned + 3


def test_ample_budget_runs_every_step(tiny_data, tmp_path, tiny_config):
    config = tiny_config(
        tiny_data,
        **{
            "train.log_every": 1,
            "train.time_budget_min": 60.0,
            "train.num_steps": 8,
            "train.eval_every": 0,
            "train.checkpoint_every": 0,
        },
    )
    result = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 8 and int(result["state"].num_steps) == 8


def test_process_start_time_is_before_this_test_module_ran():
    started = time_budget.process_start_time()
    assert started <= _IMPORTED <= time.time()
    assert _IMPORTED - started < 24 * 3600.0


def test_cost_once_compiled_replaces_the_compiling_call_by_the_others():
    # input waits 0.5 s; the first of 4 calls compiled (9 s), the others take 1 s each
    assert time_budget.cost_once_compiled(0.5, [9.0, 1.0, 1.0, 1.0]) == pytest.approx(4.5)
    assert time_budget.cost_once_compiled(0.5, [1.0, 2.0, 3.0]) == pytest.approx(0.5 + 3 * 2.5)
    assert time_budget.cost_once_compiled(0.25, [3.0]) == pytest.approx(3.25)  # one call: as timed
    assert time_budget.cost_once_compiled(0.0, []) == 0.0


def test_budgeted_run_with_evaluations_and_images_times_them_once_compiled(tiny_data, tmp_path, tiny_config):
    """The budgeted loop's evaluation and image-grid paths (timed for the planner as they cost once
    compiled): a spent budget ends the run at its first plan with its evaluations and grids."""
    workdir = str(tmp_path / "run")
    config = tiny_config(
        tiny_data,
        **{
            "train.log_every": 1,
            "train.eval_every": 2,
            "train.image_every": 2,
            "train.checkpoint_every": 0,
            "train.time_budget_min": 1.0,
        },
    )
    result = trainer.train_and_evaluate(config, workdir, start_time=time.time() - 3600.0)
    planned = 1 + time_budget.BudgetPlanner.WARMUP_WINDOWS
    assert result["step"] == planned
    assert sorted(os.listdir(f"{workdir}/images")) == [f"step_{s:07d}.png" for s in range(2, planned + 1, 2)]
    assert np.isfinite(result["eval"]["val/mpjpe"])

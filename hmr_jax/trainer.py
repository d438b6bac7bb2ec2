"""The training loop of HMR, read top to bottom in stages: config and workdir, body and data, state
(restored or fresh), compiled steps, then the loop (train, log, validate, draw, checkpoint).

Each stage is built from the library: `config_checks`, `workdir`, `data.setup`, `mean_params`,
`state`, `steps`, `sharding`, `time_budget`. The state is one pytree (`state.TrainState`), the
data position is its step, and the steps are pure functions compiled once.
"""

import copy
import dataclasses
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import config_checks, fitting, mean_params, render, sharding, smpl, steps, time_budget
from hmr_jax import plot as plot_lib
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import setup as data_setup
from hmr_jax.fitting import prior as fit_prior


class StopRequest:
    """SIGTERM handler: sets a flag the loop checks (it then saves a checkpoint and exits)."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        del frame
        logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
        self.requested = True


def nonfinite_terms(metrics: Mapping[str, Any]) -> list[str]:
    """Names of the metrics whose value is NaN or inf."""
    return sorted(k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v, np.float64))))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, start_time: float | None = None
) -> dict[str, Any]:
    """Train (resuming from workdir/checkpoints if any), evaluate, checkpoint, log.

    `start_time` (seconds since the epoch; default now) starts train.time_budget_min's clock.

    Returns {'state', 'step', 'train' (last logged metrics), 'eval' (last validation metrics),
    'best_metric', 'best_step', 'stopped_early', 'interrupted'}.
    """
    # Stage 1: the config, checked before anything is read, written or compiled.
    start_time = time.time() if start_time is None else start_time
    config_checks.validate_config(config, jax.device_count(), jax.process_count())
    is_main = jax.process_index() == 0
    workdir = os.path.abspath(workdir)
    mesh = sharding.make_mesh()
    stop = StopRequest()  # SIGTERM from here on: checkpoint at the next step, then return
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    try:
        with jax.set_mesh(mesh):
            return _train(config, workdir, mesh, is_main, stop, start_time)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _train(config, workdir: str, mesh, is_main: bool, stop: StopRequest, start_time: float) -> dict[str, Any]:
    tc = config.train
    replicate = functools.partial(sharding.replicate, mesh=mesh)

    # Stage 2: body model and data.
    body_model_path = workdir_lib.body_model_path(config)
    smpl_host = smpl.load(body_model_path)
    paths = data_setup.prepare_data(config, workdir, body_model_path)
    labels = mean_params.training_labels(config, paths)  # read once: the regressor's start and the baseline
    if config.model.init_from:  # fine-tuning: that run's regressor start, its weights below
        config = workdir_lib.start_from_run(config, config.model.init_from)
    config = mean_params.resolve_mean_params(config, paths, labels)  # kept in config.json
    train_source = data_setup.make_source(config, config.data.train_split, paths)
    val_source = data_setup.make_source(config, config.data.val_split, paths) if config.data.val_split else None
    if config.train.fit_in_loop and not config.train.fit_table_size:  # the fit table's rows (kept in config.json)
        config = copy.deepcopy(config)
        with config.unlocked():
            config.train.fit_table_size = data_setup.index_space(config, train_source)
    smpl_model = replicate(smpl_host)
    prior_file = config.adversarial.prior_file
    prior = replicate(data_setup.load_prior(prior_file)) if prior_file else None

    # Stage 3: models, state (sharded), checkpoint restore.
    parts = state_lib.make_static_parts(config)
    manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
    meta = {"best_metric": None, "best_step": None, "bad_evals": 0, "stopped_early": False}
    restored = ckpt_lib.restore_newest(manager, state_lib.abstract_state(config, parts, mesh))  # skips damaged
    if restored is not None:
        state, saved_meta = restored
        meta.update(saved_meta)
        logging.info("Resumed from %s at step %d", manager.directory, int(state.step))
    else:
        state = state_lib.create_sharded_state(config, parts, mesh)
        if config.model.init_from:
            state = workdir_lib.generator_weights_from_run(state, parts, config.model.init_from, mesh)
            logging.info("Starting from the generator of %s", config.model.init_from)
    if is_main:  # only now: a refused run (invalid config, missing data, another config's checkpoint)
        os.makedirs(workdir, exist_ok=True)  # leaves the workdir as it was
        workdir_lib.write_config(config, workdir)
    budget = float(tc.time_budget_min) > 0
    if not budget:  # the config's length (a resumed run may be extended), else the planned one
        state = dataclasses.replace(state, num_steps=replicate(np.int32(tc.num_steps)))
    step = int(jax.device_get(state.step))
    train_iter = data_setup.make_input(config, train_source, train=True, start_step=step)  # resumes the data
    joint_set = train_iter.joint_set
    state_lib.check_keypoint_head(config, joint_set)
    host_regressors = data_setup.load_regressors(config, joint_set)
    regressors = replicate(host_regressors) if host_regressors else None
    train_body, train_regressors = data_setup.loss_body(config, smpl_host, host_regressors)
    if train_body is smpl_host:  # every vertex: the step uses the copies already on the devices
        train_body, train_regressors = smpl_model, regressors
    else:
        train_body = replicate(train_body)
        train_regressors = replicate(train_regressors) if train_regressors else None
    fit_parts = None
    if config.train.fit_in_loop:  # SMPLify's body (the dataset's keypoints) and pose prior
        pose_prior = fit_prior.load(config.train.fit_pose_prior) if config.train.fit_pose_prior else None
        fit_parts = replicate(
            {
                "body": fitting.keypoint_body(smpl_host, (joint_set,), host_regressors),
                "prior": pose_prior or fit_prior.default_prior(),
            }
        )

    # Stage 4: compiled steps (state donated; batch sharded over 'data'; the rest replicated).
    replicated = NamedSharding(mesh, P())
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    train_step = jax.jit(
        steps.make_train_step(config, parts, joint_set),
        donate_argnums=(0,),
        out_shardings=(state_sharding, replicated),
    )
    eval_step = jax.jit(steps.make_eval_step(config, parts, joint_set), out_shardings=replicated)
    predict = jax.jit(steps.make_predict(config, parts))
    plateau_step = jax.jit(
        functools.partial(steps.update_plateau, parts.plateau_tx), donate_argnums=(0,), out_shardings=state_sharding
    )
    baseline = replicate(mean_params.mean_body(*labels)) if val_source is not None and labels is not None else None

    def evaluate(state) -> tuple[dict[str, float], float]:
        """The validation metrics, and what the evaluation costs once compiled (seconds)."""
        sums, wait, calls = None, 0.0, []
        t = time.time()
        for batch in data_setup.make_input(config, val_source, train=False):
            batch = sharding.to_global(data_setup.step_arrays(batch), mesh)
            t_call = time.time()
            out = jax.device_get(eval_step(state, batch, smpl_model, regressors, baseline))
            wait, t = wait + t_call - t, time.time()
            calls.append(t - t_call)
            sums = out if sums is None else {k: sums[k] + out[k] for k in out}
        return steps.finalize_eval(sums), time_budget.cost_once_compiled(wait + time.time() - t, calls)

    # Stage 5: writers, image batch, run-length planner.
    writer = workdir_lib.make_writer(workdir, is_main)
    metrics_log = workdir_lib.MetricsLog(workdir, start_step=step, enabled=is_main)
    image_batch = None
    if tc.image_every:
        first = next(iter(data_setup.make_input(config, val_source or train_source, train=False)))
        image_batch = sharding.to_global({"image": first["image"]}, mesh)["image"]

    def draw_images(state, step) -> None:
        vertices = sharding.gather(predict(state, image_batch, smpl_model)["vertices"])
        if is_main:
            # Spread over the batch (neighbouring validation samples are often one video).
            pick = np.linspace(0, len(vertices) - 1, min(tc.num_images, len(vertices))).astype(int)
            sheet = workdir_lib.draw_predictions(
                sharding.gather(image_batch)[pick],
                vertices[pick],
                np.asarray(smpl_host.faces),
                steps.focal_length(config),
                cols=min(4, len(pick)),
            )
            os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
            render.save_png(os.path.join(workdir, "images", f"step_{step:07d}.png"), sheet)
            writer.write_images(step, {"predictions": sheet[None]})

    num_steps = int(jax.device_get(state.num_steps))
    # A resumed run keeps the length its first run planned (checkpointed in the state).
    planner = (
        time_budget.BudgetPlanner(config, start_time, final_eval=val_source is not None and bool(tc.eval_every))
        if budget and not meta.get("budget_planned")
        else None
    )
    result = {"train": {}, "eval": {}, "stopped_early": bool(meta["stopped_early"]), "interrupted": False}
    last_saved = manager.latest_step()

    def save(state, step, best_metric=None):
        nonlocal last_saved
        ckpt_lib.save(manager, step, state, meta, best_metric)
        last_saved = step

    def replan(state, step):
        """train.time_budget_min: the run's length from the speed so far."""
        nonlocal num_steps
        planned = sharding.broadcast_int(planner.plan(step, num_steps, time.time()))
        if planned is None or planned == num_steps:
            return state
        logging.info(
            "train.time_budget_min=%g: %d steps fit (%.3f s per step now)%s",
            tc.time_budget_min,
            planned,
            planner.windows[-1],
            " (re-planned)" if meta.get("budget_planned") else "",
        )
        meta["budget_planned"] = True
        num_steps = planned
        bar.total = num_steps
        bar.refresh()
        return dataclasses.replace(state, num_steps=replicate(np.int32(num_steps)))

    # Stage 6: the loop.
    bar = tqdm.tqdm(
        total=num_steps, initial=step, disable=not (is_main and tc.progress_bar), unit="step", dynamic_ncols=True
    )
    log_handlers = [] if bar.disable else list(logging.getLogger().handlers)
    clear_bar = _bar_clearing_filter(bar)  # log lines (absl's handler) clear the bar's line first
    for handler in log_handlers:
        handler.addFilter(clear_bar)
    try:
        t0, s0 = time.time(), step
        while step < num_steps and not meta["stopped_early"]:
            batch = data_setup.hide_labels(next(train_iter), config.data.hide_labels_fraction)
            batch = sharding.to_global(data_setup.step_arrays(batch, fitting=fit_parts is not None), mesh)
            state, metrics = train_step(state, batch, train_body, prior, train_regressors, fit_parts)
            step += 1
            ckpt_lib.check_saved(manager)  # a background save that failed (disk full) stops the run now
            bar.update(1)
            if step % tc.log_every == 0 or step == num_steps:
                values = _host_metrics(metrics, step, tc)
                elapsed = time.time() - t0
                values["perf/images_per_sec"] = (step - s0) * config.data.batch_size / max(elapsed, 1e-9)
                if planner is not None:
                    planner.window(elapsed / max(step - s0, 1))
                    state = replan(state, step)
                    values["budget/num_steps"] = float(num_steps)
                writer.write_scalars(step, values)
                metrics_log.append(step, values)
                bar.set_postfix(loss=f"{values['loss/total']:.4g}", img_s=f"{values['perf/images_per_sec']:.1f}")
                result["train"] = values
                t0, s0 = time.time(), step
            best_value = None
            if val_source is not None and tc.eval_every and (step % tc.eval_every == 0 or step == num_steps):
                result["eval"], eval_seconds = evaluate(state)
                if planner is not None:
                    planner.evaluated(eval_seconds)
                writer.write_scalars(step, result["eval"])
                metrics_log.append(step, result["eval"])
                best_value = result["eval"][config.early_stopping.metric]
                if _improved(meta, best_value, step, config.early_stopping):
                    save(state, step, best_value)
                if config.optim.plateau.enabled:
                    state = plateau_step(state, jnp.asarray(best_value, jnp.float32))
                t0 = time.time()  # do not count evaluation time in images/s
            if image_batch is not None and step % tc.image_every == 0:
                if planner is not None and planner.image_seconds is None:  # compiles: time it from then on
                    jax.block_until_ready(predict(state, image_batch, smpl_model))
                t_image = time.time()
                draw_images(state, step)
                if planner is not None:
                    planner.drew_images(time.time() - t_image)
                t0 = time.time()
            check_stop = jax.process_count() == 1 or step % tc.log_every == 0
            if check_stop and sharding.any_process(stop.requested):
                result["interrupted"] = True
                save(state, step, best_value)
                logging.info("Stopped by signal at step %d; checkpoint saved.", step)
                break
            due = tc.checkpoint_every and step % tc.checkpoint_every == 0
            if (due or meta["stopped_early"]) and last_saved != step:
                save(state, step, best_value)
        bar.close()
        if last_saved != step:
            save(state, step)
        result["stopped_early"] = bool(meta["stopped_early"])
    finally:
        for handler in log_handlers:
            handler.removeFilter(clear_bar)
        ckpt_lib.finish(manager)
        writer.flush()
    if is_main and os.path.exists(metrics_log.path):
        plot_lib.plot_run(workdir)
    writer.close()
    result.update(state=state, step=step, best_metric=meta["best_metric"], best_step=meta["best_step"])
    return result


def _host_metrics(metrics: Mapping[str, jax.Array], step: int, tc) -> dict[str, float]:
    """The step's metrics on the host, checked for NaN / inf (train.nan_policy 'stop' raises)."""
    values = jax.device_get(metrics)
    bad = nonfinite_terms({k: v for k, v in values.items() if k != "skipped"})
    if bad and tc.nan_policy == "stop":
        raise FloatingPointError(
            f"non-finite training values at step {step}: "
            + ", ".join(f"{k}={float(values[k])}" for k in bad)
            + f" (metrics are checked every train.log_every={tc.log_every} steps; "
            f"train.nan_policy='skip' skips such updates instead)"
        )
    return {k: float(v) for k, v in values.items()}


def _improved(meta: dict[str, Any], value: float, step: int, es) -> bool:
    """Book-keeping of early stopping after an evaluation: True when `value` is a new best (by more
    than es.min_delta); sets meta['stopped_early'] after es.patience evaluations without one."""
    if meta["best_metric"] is None or value < meta["best_metric"] - es.min_delta:
        meta.update(best_metric=float(value), best_step=int(step), bad_evals=0)
        return True
    meta["bad_evals"] += 1
    if es.patience and meta["bad_evals"] >= es.patience:
        logging.info(
            "Early stopping at step %d: %s did not improve for %d evaluations (best %.6g at step %s)",
            step,
            es.metric,
            meta["bad_evals"],
            meta["best_metric"],
            meta["best_step"],
        )
        meta["stopped_early"] = True
    return False


def _bar_clearing_filter(bar) -> Callable[[logging.LogRecord], bool]:
    """A log-handler filter that clears `bar`'s line before each record is written, so that log
    lines start on a line of their own instead of running on from the bar's (which is redrawn
    below them at its next update). Lets every record through."""

    def clear(record: logging.LogRecord) -> bool:
        del record
        bar.clear()
        return True

    return clear

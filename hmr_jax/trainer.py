"""Training of HMR: `TrainState`, the pure `train_step` / `eval_step`, and the training loop.

Read top to bottom in stages (config checks: `hmr_jax.config_checks`): optimisers, state, steps, input, loop.

* `TrainState` is one pytree: step, the run's length (for the learning-rate schedules; set
  while training under train.time_budget_min), generator params / batch stats / optimiser state,
  discriminator params / optimiser state, reduce-on-plateau state and the RNG key. The data
  position is the step (the input pipeline restarts at `make_iterator(start_step=step)`).
* `train_step(state, batch, smpl_model, prior)` is pure; it is compiled once with `jax.jit`,
  the state donated, the batch sharded over the mesh axis 'data' and everything else
  replicated. Generator and discriminator are updated in the same step.
* The NNX modules stay behind `hmr_jax.models.hmr`'s pure `apply_*` functions; their static
  graphdefs live in `Models`, outside the state.
"""

import copy
import dataclasses
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import config_checks, geometry, losses, smpl
from hmr_jax import joints as joints_lib
from hmr_jax import metrics as metrics_lib
from hmr_jax.config_checks import ConfigError
from hmr_jax.data import augment as augment_lib
from hmr_jax.models import hmr as hmr_lib

PyTree = Any
Batch = Mapping[str, Any]

METRICS_FILE = "metrics.jsonl"


# --------------------------------------------------------------------------------------- optimisers


def learning_rate(cfg: ml_collections.ConfigDict, count, num_steps):
    """The learning rate at step `count` of a `num_steps`-step run: 'constant', 'warmup_cosine'
    (to end_factor * lr at num_steps; optax's warmup_cosine_decay_schedule), 'warmup_linear' (a
    straight line to end_factor * lr at num_steps; optax's linear_schedule) or 'step' decay, each
    after `warmup_steps` of linear warm-up from 0. `count` and `num_steps` may be traced (the
    trainer reads the run's length from the state: train.time_budget_min sets it while training)."""
    lr, warmup = float(cfg.learning_rate), int(cfg.warmup_steps)
    count = jnp.asarray(count, jnp.float32)
    ramp = lr * count / warmup if warmup else lr
    if cfg.schedule in config_checks.DECAY_TO_END_SCHEDULES:
        span = jnp.maximum(jnp.asarray(num_steps, jnp.float32), warmup + 1) - warmup
        end = lr * float(cfg.end_factor)
        done = jnp.clip((count - warmup) / span, 0.0, 1.0)
        if cfg.schedule == "warmup_cosine":
            main = end + (lr - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        else:
            main = lr + (end - lr) * done
    elif cfg.schedule == "constant":
        main = jnp.full_like(count, lr)
    else:  # step
        main = lr * float(cfg.decay_factor) ** jnp.floor((count - warmup) / int(cfg.decay_every))
    return jnp.where(count < warmup, ramp, main)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax chain: optional global-norm clipping, then adam / adamw / sgd.

    The learning rate is a hyperparameter in the optimiser state (`optax.inject_hyperparams`,
    initially cfg.learning_rate): the train step sets it each step from `learning_rate` (the
    schedule of the run's current length) times the reduce-on-plateau scale (`set_learning_rate`).
    `weight_decay` as PyTorch's optimisers take it: decoupled for adamw (`torch.optim.AdamW`), an L2
    term `weight_decay * param` added to the (clipped) gradient for adam and sgd (`torch.optim.Adam`,
    `torch.optim.SGD`); on every parameter. `lr_scale` (optional, {module: factor}): per-module
    learning rates, the updates of `params[module]` times the factor (`_scale_by_module`).
    """
    if cfg.name == "adam":
        factory, kwargs = optax.adam, dict(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "adamw":
        factory, kwargs = optax.adamw, dict(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        factory, kwargs = optax.sgd, dict(momentum=cfg.momentum or None)
    opt = optax.inject_hyperparams(factory, static_args=tuple(kwargs))(learning_rate=float(cfg.learning_rate), **kwargs)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    if cfg.name != "adamw" and cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(opt)
    scales = {k: float(v) for k, v in cfg.get("lr_scale", {}).items() if float(v) != 1.0}
    if scales:  # only then: the optimiser state of a run without scales stays as it was
        parts.append(_scale_by_module(scales))
    return optax.chain(*parts)


def _scale_by_module(scales: Mapping[str, float]) -> optax.GradientTransformation:
    """The updates of each top-level module `params[name]` times `scales[name]`: a per-module
    learning rate (AdamW's decoupled weight decay, part of the update, scaled with it); other
    modules' updates unchanged (all of them when params is not a mapping of modules)."""
    transforms = {name: optax.scale(s) for name, s in scales.items()}
    transforms["_unscaled"] = optax.identity()

    def labels(params):
        if not isinstance(params, Mapping):
            return "_unscaled"
        return {k: k if k in scales else "_unscaled" for k in params}

    return optax.multi_transform(transforms, labels)


def _is_injected(x) -> bool:
    return isinstance(x, optax.InjectStatefulHyperparamsState)


def set_learning_rate(opt_state: PyTree, lr: jax.Array) -> PyTree:
    """`opt_state` of `make_optimizer` with its learning rate set to `lr`."""

    def put(s):
        if not _is_injected(s):
            return s
        return s._replace(hyperparams={**s.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)})

    return jax.tree.map(put, opt_state, is_leaf=_is_injected)


def make_plateau(cfg: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """Reduce-on-plateau, fed once per evaluation with the validation metric (patience in evals)."""
    return optax.contrib.reduce_on_plateau(
        factor=cfg.factor,
        patience=cfg.patience,
        rtol=cfg.rtol,
        atol=0.0,
        cooldown=cfg.cooldown,
        accumulation_size=1,
        min_scale=cfg.min_scale,
    )


# -------------------------------------------------------------------------------------------- state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training (one pytree; checkpointed whole)."""

    step: jax.Array  # () int32; also the data position
    num_steps: jax.Array  # () int32: the run's length, for the learning-rate schedules (train.num_steps,
    #                      or what train.time_budget_min fits: set while training, kept on resume)
    gen_params: PyTree
    gen_batch_stats: PyTree
    gen_opt_state: PyTree
    disc_params: PyTree
    disc_opt_state: PyTree
    plateau: PyTree  # optax.contrib.ReduceLROnPlateauState; scale multiplies both learning rates
    rng: jax.Array  # (2,) uint32 raw key


class Models(NamedTuple):
    """Static parts: NNX graphdefs and optax transformations (closed over by the steps)."""

    gen: Any
    disc: Any
    gen_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation
    gen_lr: Callable[[jax.Array, jax.Array], jax.Array]  # (step, num_steps) -> learning rate
    disc_lr: Callable[[jax.Array, jax.Array], jax.Array]
    plateau_tx: optax.GradientTransformationExtraArgs


def generator_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`hmr.build_generator`'s arguments. The regressor starts from model.mean_pose / mean_betas
    once `resolve_mean_params` has filled them (a run's config.json holds them), else from
    `regressor.default_mean_params`; its camera from model.mean_cam (the default's when absent)."""
    m = config.model
    mean_pose, mean_betas = tuple(m.get("mean_pose", ())), tuple(m.get("mean_betas", ()))
    return dict(
        mean_pose=mean_pose or None,
        mean_betas=mean_betas or None,
        mean_cam=tuple(m.mean_cam) if "mean_cam" in m else None,  # absent in older runs
        depth=m.depth,
        width=m.width,
        dtype=m.dtype,
        rot_repr=m.rot_repr,
        hidden=tuple(m.hidden),
        dropout=m.dropout,
        n_iter=m.n_iter,
        final_init_gain=m.final_init_gain,
        bn_momentum=m.bn_momentum,
        zero_init_residual=m.zero_init_residual,
        keypoint_head=keypoint_head_kwargs(config),
    )


def keypoint_head_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """`build_generator`'s keypoint_head: None when off (or absent: runs older than the head).
    Runs from before `stride` / `input_scale` existed had 8 and 1."""
    head = config.model.get("keypoint_head")
    if head is None or not head.enabled:
        return None
    return dict(
        num_keypoints=int(head.num_keypoints),
        channels=int(head.channels),
        stride=int(head.get("stride", 8)),
        input_scale=float(head.get("input_scale", 1.0)),
    )


def discriminator_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    d = config.model.disc
    return dict(
        joint_hidden=tuple(d.joint_hidden), pose_hidden=tuple(d.pose_hidden), shape_hidden=tuple(d.shape_hidden)
    )


def make_models(config: ml_collections.ConfigDict) -> Models:
    """Graphdefs (from abstract initialisation: no arrays are allocated) and optimisers."""
    key = jax.random.PRNGKey(0)
    gen_def = jax.eval_shape(functools.partial(hmr_lib.init_generator, **generator_kwargs(config)), key)[0]
    disc_def = jax.eval_shape(functools.partial(hmr_lib.init_discriminator, **discriminator_kwargs(config)), key)[0]
    return Models(
        gen_def,
        disc_def,
        make_optimizer(config.optim.gen),
        make_optimizer(config.optim.disc),
        functools.partial(learning_rate, config.optim.gen),
        functools.partial(learning_rate, config.optim.disc),
        make_plateau(config.optim.plateau),
    )


def _rbg(key: jax.Array) -> jax.Array:
    """A raw threefry key (uint32[2]) as an 'rbg' key for parameter initialisation: XLA compiles
    the initialisers of a ResNet from rbg keys several times faster than from threefry keys."""
    return jax.random.wrap_key_data(jnp.tile(key, 2), impl="rbg")


def init_state(config: ml_collections.ConfigDict, models: Models, key: jax.Array) -> TrainState:
    """Fresh state from a raw PRNG key (pure: jit it with out_shardings, or eval_shape it)."""
    k_gen, k_disc, k_train = jax.random.split(key, 3)
    _, gen_params, gen_stats = hmr_lib.init_generator(_rbg(k_gen), **generator_kwargs(config))
    _, disc_params = hmr_lib.init_discriminator(_rbg(k_disc), **discriminator_kwargs(config))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        num_steps=jnp.asarray(config.train.num_steps, jnp.int32),
        gen_params=gen_params,
        gen_batch_stats=gen_stats,
        gen_opt_state=models.gen_tx.init(gen_params),
        disc_params=disc_params,
        disc_opt_state=models.disc_tx.init(disc_params),
        plateau=models.plateau_tx.init(jnp.zeros((), jnp.float32)),
        rng=k_train,
    )


def abstract_state(config, models: Models, mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state, without allocating it."""
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(functools.partial(init_state, config, models), jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)


def create_sharded_state(config, models: Models, mesh: jax.sharding.Mesh) -> TrainState:
    """Initialise the state directly with replicated shardings (no host round trip)."""
    replicated = NamedSharding(mesh, P())
    abstract = abstract_state(config, models, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    init = functools.partial(init_state, config, models)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed))
    if config.model.pretrained_encoder:
        params, stats = hmr_lib.load_pretrained_encoder(
            state.gen_params, state.gen_batch_stats, config.model.pretrained_encoder
        )
        put = lambda t: jax.device_put(t, replicated)  # noqa: E731
        state = dataclasses.replace(
            state,
            gen_params=put(params),
            gen_batch_stats=put(stats),
            gen_opt_state=jax.jit(
                models.gen_tx.init, out_shardings=jax.tree.map(lambda _: replicated, abstract.gen_opt_state)
            )(put(params)),
        )
    return state


# -------------------------------------------------------------------------------------------- steps


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _masked_disc_real_loss(d_real, mask):
    """Eq. (8)'s real term, sum_i mean_b (D_i - 1)^2, as a masked mean over the real samples."""
    if mask is None:
        return jnp.sum(jnp.mean((d_real - 1.0) ** 2, axis=0))
    return losses.masked_mean(jnp.sum((d_real - 1.0) ** 2, axis=-1), mask)


def make_train_step(config: ml_collections.ConfigDict, models: Models, joint_set: str) -> Callable:
    """The pure training step `(state, batch, smpl_model, prior, regressors) -> (state, metrics)`.

    `prior` is None (real samples for the discriminators = the batch's ground truth where
    has_smpl) or {'pose': (N, 72), 'shape': (N, 10)} sampled inside the step.
    """
    weights = {k: float(v) for k, v in config.loss_weights.items()}
    adversarial = weights["adversarial"] > 0 or config.adversarial.disc_loss_weight > 0
    disc_weight = float(config.adversarial.disc_loss_weight)
    img_size = config.data.img_size
    skip_nonfinite = config.train.nan_policy == "skip"
    head = keypoint_head_kwargs(config) is not None
    lift = head and weights["lift"] > 0
    lift_sigma = 2.0 * float(config.train.lift_noise_px) / img_size  # px -> normalised units
    heatmap_sigma = float(config.train.heatmap_sigma_px)

    def train_step(
        state: TrainState,
        batch: Batch,
        smpl_model: smpl.SMPLModel,
        prior: Mapping[str, jax.Array] | None = None,
        regressors: Mapping[str, jax.Array] | None = None,
    ) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        k_dropout, k_prior = jax.random.split(key)
        k_lift = jax.random.fold_in(key, 1)
        has_smpl = batch["has_smpl"]  # (B,)
        gt_rotmat = losses.pose_to_rotmat(batch["pose"])  # (B, 24, 3, 3)
        gt_vertices = smpl.forward(smpl_model, batch["shape"], gt_rotmat).vertices  # (B, V, 3)
        scale = state.plateau.scale
        gen_lr = models.gen_lr(state.step, state.num_steps) * scale
        disc_lr = models.disc_lr(state.step, state.num_steps) * scale

        def terms_3d(estimates):
            """The 3D-supervised terms of each estimate {pose_rotmat, betas} -> [(terms, model joints)].
            One SMPL forward for all of them (stacked on the batch axis): the pose blend shapes' matmul
            streams its (207, 3V) weights once instead of once per estimate."""
            n = len(estimates)
            cat = lambda k: jnp.concatenate([e[k] for e in estimates], axis=0)  # noqa: E731
            body = smpl.forward(smpl_model, cat("betas"), cat("pose_rotmat"))  # (nB, V, 3), (nB, 24, 3)
            vertices = jnp.split(body.vertices, n)
            pred_joints = jnp.split(joints_lib.model_joints(joint_set, body.joints, body.vertices, regressors), n)
            return [
                (
                    {
                        "vertex_l2": losses.vertex_l2_loss(v, gt_vertices, has_smpl),
                        "vertex_l1": losses.vertex_l1_loss(v, gt_vertices, has_smpl),
                        "beta": losses.beta_l2_loss(e["betas"], batch["shape"], has_smpl),
                        "pose": losses.pose_l2_loss(e["pose_rotmat"], gt_rotmat, has_smpl),
                        "joints_3d": losses.joints_3d_l2_loss(j, batch["joints_3d"], batch["has_joints_3d"], joint_set),
                        "joints_3d_pa": losses.joints_3d_pa_loss(j, batch["joints_3d"], batch["has_joints_3d"]),
                    },
                    j,
                )
                for e, v, j in zip(estimates, vertices, pred_joints)
            ]

        def gen_loss(params):
            lift_keypoints = None
            if lift:  # GT 2D keypoints + noise, with their visibility (invisible: the head's own)
                gt_2d = losses.normalize_keypoints(batch["keypoints_2d"][..., :2], img_size)  # (B, J, 2)
                noisy = gt_2d + lift_sigma * jax.random.normal(k_lift, gt_2d.shape, gt_2d.dtype)
                lift_keypoints = jnp.concatenate([noisy, batch["keypoints_2d"][..., 2:]], axis=-1)  # (B, J, 3)
            out, new_stats = hmr_lib.apply_generator(
                models.gen,
                params,
                state.gen_batch_stats,
                batch["image"],
                k_dropout,
                train=True,
                lift_keypoints=lift_keypoints,
            )
            per_estimate = terms_3d([out, out["lift"]] if lift else [out])
            terms, pred_joints = per_estimate[0]
            terms["joints_2d"] = losses.joints_2d_l1_loss(pred_joints, out["cam"], batch["keypoints_2d"], img_size)
            zero = jnp.zeros((), jnp.float32)  # terms of parts the config leaves out
            terms["keypoints_2d"] = (
                losses.keypoints_l1_loss(out["keypoints_2d"], batch["keypoints_2d"], img_size) if head else zero
            )
            terms["keypoint_heatmap"] = (
                losses.keypoint_heatmap_loss(out["keypoint_logits"], batch["keypoints_2d"], img_size, heatmap_sigma)
                if head and weights["keypoint_heatmap"] > 0
                else zero
            )
            terms["lift"] = zero
            if lift:
                lift_terms = per_estimate[1][0]
                terms["lift"] = sum(weights[k] * lift_terms[k] for k in losses.LIFT_TERMS)
            its = out["iterations"]
            n_it, b = its["betas"].shape[:2]
            fake_rotmat = its["pose_rotmat"].reshape((n_it * b, 24, 3, 3))  # every iteration, as HMR
            fake_betas = its["betas"].reshape((n_it * b, -1))
            if adversarial:
                d_fake = hmr_lib.apply_discriminator(models.disc, state.disc_params, fake_rotmat[:, 1:], fake_betas)
                terms["adversarial"] = losses.adversarial_generator_loss(d_fake)
            else:
                terms["adversarial"] = zero
            total, report = losses.total_generator_loss(terms, weights)
            return total, (report, new_stats, fake_rotmat, fake_betas)

        (total, (report, new_stats, fake_rotmat, fake_betas)), grads = jax.value_and_grad(gen_loss, has_aux=True)(
            state.gen_params
        )
        updates, gen_opt_state = models.gen_tx.update(
            grads, set_learning_rate(state.gen_opt_state, gen_lr), state.gen_params
        )
        gen_params = optax.apply_updates(state.gen_params, updates)
        metrics = {f"loss/{k}": v for k, v in report.items()}
        metrics["grad_norm/gen"] = optax.tree.norm(grads)
        finite = jnp.isfinite(total) & jnp.isfinite(metrics["grad_norm/gen"])

        disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
        if adversarial:
            if prior is not None:
                idx = jax.random.randint(k_prior, (batch["pose"].shape[0],), 0, prior["pose"].shape[0])
                real_rotmat = losses.pose_to_rotmat(prior["pose"][idx])
                real_betas, real_mask = prior["shape"][idx], None
            else:
                real_rotmat, real_betas, real_mask = gt_rotmat, batch["shape"], has_smpl
            fake_rotmat = jax.lax.stop_gradient(fake_rotmat)
            fake_betas = jax.lax.stop_gradient(fake_betas)

            def disc_loss(params):
                d_real = hmr_lib.apply_discriminator(models.disc, params, real_rotmat[:, 1:], real_betas)
                d_fake = hmr_lib.apply_discriminator(models.disc, params, fake_rotmat[:, 1:], fake_betas)
                loss = _masked_disc_real_loss(d_real, real_mask) + jnp.sum(jnp.mean(d_fake**2, axis=0))
                return disc_weight * loss, (loss, d_real, d_fake)

            (_, (d_loss, d_real, d_fake)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(disc_params)
            d_updates, disc_opt_state = models.disc_tx.update(
                d_grads, set_learning_rate(disc_opt_state, disc_lr), disc_params
            )
            disc_params = optax.apply_updates(disc_params, d_updates)
            metrics["loss/disc"] = d_loss
            metrics["grad_norm/disc"] = optax.tree.norm(d_grads)
            metrics["disc/real_mean"] = losses.masked_mean(jnp.mean(d_real, axis=-1), real_mask)
            metrics["disc/fake_mean"] = jnp.mean(d_fake)
            finite = finite & jnp.isfinite(d_loss) & jnp.isfinite(metrics["grad_norm/disc"])

        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            gen_params=gen_params,
            gen_batch_stats=new_stats,
            gen_opt_state=gen_opt_state,
            disc_params=disc_params,
            disc_opt_state=disc_opt_state,
        )
        if skip_nonfinite:  # keep the old values where anything is NaN/inf; stays compiled
            kept = _tree_where(finite, new_state, state)
            new_state = dataclasses.replace(kept, step=state.step + 1)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        metrics["param_norm/gen"] = optax.tree.norm(new_state.gen_params)
        metrics["param_norm/disc"] = optax.tree.norm(new_state.disc_params)
        metrics["lr/gen"] = gen_lr
        metrics["lr/disc"] = disc_lr
        return new_state, metrics

    return train_step


def flip_test_enabled(config: ml_collections.ConfigDict) -> bool:
    """config eval.flip_test (absent in configs written before it existed: False)."""
    return bool(config.get("eval", {}).get("flip_test", False))


def make_inference(models: Models, *, flip_test: bool, joint_set: str | None) -> Callable:
    """`(state, images) -> {pose_rotmat, betas, cam[, keypoints_2d]}`: the eval-mode generator, or
    (flip_test, config eval.flip_test) its flip test (`hmr.apply_generator_flip_test`; the head's
    keypoints are swapped with `joint_set`'s flip permutation, or left as the crop's own when
    joint_set is None)."""
    if flip_test:
        perm = joints_lib.get_joint_set(joint_set).flip_perm if joint_set else None
        return lambda state, images: hmr_lib.apply_generator_flip_test(
            models.gen, state.gen_params, state.gen_batch_stats, images, perm
        )
    return lambda state, images: hmr_lib.apply_generator(
        models.gen, state.gen_params, state.gen_batch_stats, images, None, train=False
    )[0]


def make_eval_step(config: ml_collections.ConfigDict, models: Models, joint_set: str) -> Callable:
    """Pure evaluation step -> per-batch sums {name: sum over valid samples, 'count/...': n}.

    A sample counts when ``batch['mask']`` (1 = real, 0 = padding) and its label flag are set:
    vertex metrics need has_smpl, joint metrics has_joints_3d. MPJPE/PA-MPJPE/PVE in mm,
    v2v_l2 in m^2 (the report's score).
    """

    infer = make_inference(models, flip_test=flip_test_enabled(config), joint_set=joint_set)

    def metrics_of(pose_rotmat, betas, batch, gt_body, smpl_model, regressors):
        body = smpl.forward(smpl_model, betas, pose_rotmat)
        pred_joints = joints_lib.model_joints(joint_set, body.joints, body.vertices, regressors)
        gt_joints, conf = batch["joints_3d"][..., :3], batch["joints_3d"][..., 3]
        valid = batch["mask"]
        m_smpl = valid * batch["has_smpl"]
        m_j3d = valid * batch["has_joints_3d"] * (jnp.sum(conf, axis=-1) > 0)
        safe_conf = jnp.where(m_j3d[:, None] > 0, conf, 1.0)  # padded rows: avoid 0/0
        per_sample = {
            "mpjpe": (metrics_lib.mpjpe(pred_joints, gt_joints, root=joint_set, weights=safe_conf), m_j3d),
            "pa_mpjpe": (metrics_lib.pa_mpjpe(pred_joints, gt_joints, weights=safe_conf), m_j3d),
            "pve": (metrics_lib.pve(body.vertices, gt_body.vertices, body.joints[:, 0], gt_body.joints[:, 0]), m_smpl),
            "v2v_l2": (metrics_lib.v2v_l2(body.vertices, gt_body.vertices), m_smpl),
        }
        sums = {k: jnp.sum(jnp.where(m > 0, v, 0.0)) for k, (v, m) in per_sample.items()}
        sums["count/joints"] = jnp.sum(m_j3d)
        sums["count/smpl"] = jnp.sum(m_smpl)
        return sums

    def eval_step(
        state: TrainState,
        batch: Batch,
        smpl_model: smpl.SMPLModel,
        regressors: Mapping[str, jax.Array] | None = None,
        baseline: Mapping[str, jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        out = infer(state, batch["image"])
        gt_body = smpl.forward(smpl_model, batch["shape"], batch["pose"])
        sums = metrics_of(out["pose_rotmat"], out["betas"], batch, gt_body, smpl_model, regressors)
        if baseline is not None:  # the same metrics for one constant prediction (mean pose / shape)
            b = batch["shape"].shape[0]
            base = metrics_of(
                jnp.broadcast_to(baseline["pose_rotmat"], (b, 24, 3, 3)),
                jnp.broadcast_to(baseline["betas"], (b, baseline["betas"].shape[-1])),
                batch,
                gt_body,
                smpl_model,
                regressors,
            )
            sums.update({f"mean_baseline/{k}": v for k, v in base.items()})
        return sums

    return eval_step


def mean_body(pose: np.ndarray, shape: np.ndarray) -> dict[str, np.ndarray]:
    """The 'mean pose and shape' predictor (`annotations.mean_smpl`): pose (N, 72) axis-angle,
    shape (N, K) -> {'pose_rotmat' (24, 3, 3), 'betas' (K,)}."""
    from hmr_jax.data import annotations as ann_lib  # pylint: disable=g-import-not-at-top

    rot, betas = ann_lib.mean_smpl(pose, shape)
    return {"pose_rotmat": rot, "betas": betas}


def finalize_eval(sums: Mapping[str, float]) -> dict[str, float]:
    """Per-batch sums (added over batches) -> means, as 'val/<metric>' (and
    'val/mean_baseline/<metric>' when the baseline was evaluated)."""
    out = {}
    for prefix in ("", "mean_baseline/"):
        if prefix + "count/smpl" not in sums:
            continue
        for k in config_checks.EVAL_METRICS:
            n = float(sums[prefix + ("count/smpl" if k in ("pve", "v2v_l2") else "count/joints")])
            out[f"val/{prefix}{k}"] = float(sums[prefix + k]) / n if n > 0 else float("nan")
    return out


def make_predict(config: ml_collections.ConfigDict, models: Models) -> Callable:
    """(state, images, smpl_model) -> camera-frame vertices (B, V, 3) for drawing."""
    focal = config.images.focal_length_224 * config.data.img_size / 224.0
    img_size = config.data.img_size

    infer = make_inference(models, flip_test=flip_test_enabled(config), joint_set=None)  # as validation

    def predict(state: TrainState, images, smpl_model):
        out = infer(state, images)
        transl = geometry.weak_perspective_to_translation(out["cam"], focal, img_size)  # (B, 3)
        return smpl.forward(smpl_model, out["betas"], out["pose_rotmat"], transl=transl).vertices

    return predict


def update_plateau(plateau_tx, state: TrainState, value: jax.Array) -> TrainState:
    """Feed one validation value to reduce-on-plateau (call after each evaluation)."""
    _, plateau = plateau_tx.update(jnp.zeros((), jnp.float32), state.plateau, value=value)
    return dataclasses.replace(state, plateau=plateau)


# -------------------------------------------------------------------------------------------- input


def make_mesh() -> jax.sharding.Mesh:
    """1-D mesh over every device of every process, axis 'data'."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def to_global(batch: Batch, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's numpy batch -> global arrays sharded over 'data' (leading axis)."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    return jax.device_put(tree, NamedSharding(mesh, P()))


def load_prior(path: str) -> dict[str, np.ndarray]:
    """The adversarial prior file: real SMPL poses (N, 72) and shapes (N, 10), float32."""
    config_checks.check_prior_file(path)
    with np.load(path, allow_pickle=False) as f:
        return {"pose": np.asarray(f["pose"], np.float32), "shape": np.asarray(f["shape"], np.float32)}


def check_keypoint_head(config, joint_set: str) -> None:
    """The keypoint head predicts the dataset's joints: model.keypoint_head.num_keypoints must match."""
    head = keypoint_head_kwargs(config)
    n = joints_lib.get_joint_set(joint_set).num_joints
    if head is not None and head["num_keypoints"] != n:
        raise ConfigError(
            f"config 'model.keypoint_head.num_keypoints': the dataset's joint set {joint_set!r} has "
            f"{n} joints, found {head['num_keypoints']}"
        )


def load_regressors(config, joint_set: str) -> dict[str, np.ndarray] | None:
    """The vertex-to-joint regressor a dataset's joint set needs (None for 'smpl24')."""
    if joint_set == "smpl24":
        return None
    if not config.data.joint_regressor:
        raise ConfigError(
            f"config 'data.joint_regressor': the dataset's joint set {joint_set!r} needs a "
            f"({joints_lib.get_joint_set(joint_set).num_joints}, V) regressor file, found ''"
        )
    return {
        joint_set: joints_lib.load_regressor(
            config.data.joint_regressor, joints_lib.get_joint_set(joint_set).num_joints
        )
    }


def training_body(
    config, smpl_model: smpl.SMPLModel, regressors: Mapping[str, np.ndarray] | None
) -> tuple[smpl.SMPLModel, dict[str, np.ndarray] | None]:
    """The body (and joint regressors) the training step's losses use.

    `train.vertex_loss_stride` s > 1 keeps every s-th vertex, plus every vertex a joint regressor
    reads (so the regressed joints stay exact), and restricts the regressors' columns to match:
    the vertex terms become means over that subset and the step skins s times fewer vertices
    (the pose blend shapes' (207, 3V) matmul is bandwidth-bound on CPU). The SMPL joints are
    exact either way; validation always uses the whole body.
    """
    stride = int(config.train.vertex_loss_stride)
    if stride == 1:
        return smpl_model, regressors
    v = smpl_model.num_vertices
    keep = np.zeros(v, bool)
    keep[::stride] = True
    for reg in (regressors or {}).values():
        keep |= np.any(np.asarray(reg)[:, :v] != 0, axis=0)
    idx = np.flatnonzero(keep)
    restricted = (
        None
        if regressors is None
        else {k: np.concatenate([np.asarray(r)[:, idx], np.asarray(r)[:, v:]], axis=1) for k, r in regressors.items()}
    )
    return smpl.take_vertices(smpl_model, idx), restricted


def synthetic_render_size(config) -> int:
    """data.synthetic.render_size, 0 (or absent, in configs written before it) = data.img_size."""
    return int(config.data.synthetic.get("render_size", 0) or config.data.img_size)


def resolve_data_paths(config, workdir: str) -> tuple[str, str, str]:
    """(data dir, annotation file, image root); data.dir '' means `<workdir>/../data_<name>`."""
    syn = config.data.synthetic
    suffix = "" if syn.yaw_range_deg == 180.0 else f"_yaw{syn.yaw_range_deg:g}"
    suffix += "" if syn.frames_per_sequence == 8 else f"_fps{syn.frames_per_sequence}"
    data_dir = config.data.dir or os.path.join(
        os.path.dirname(os.path.abspath(workdir)),
        f"synthetic_{synthetic_render_size(config)}px_{config.data.synthetic.num}{suffix}",
    )
    ann = config.data.annotations
    ann = ann if os.path.isabs(ann) else os.path.join(data_dir, ann)
    root = config.data.image_root
    root = root if os.path.isabs(root) else os.path.join(data_dir, root)
    return data_dir, ann, root


def prepare_data(config, workdir: str, body_model_path: str) -> tuple[str, str, str]:
    """Generate the synthetic dataset on first use (data.synthetic.num > 0; process 0 writes,
    the others wait), then check that the files the config names exist."""
    data_dir, ann, root = resolve_data_paths(config, workdir)
    if config.data.source == "folder" and config.data.synthetic.num > 0 and not os.path.exists(ann):
        if jax.process_index() == 0:
            from hmr_jax.data import synthetic  # pylint: disable=g-import-not-at-top

            logging.info("Generating %d synthetic samples into %s", config.data.synthetic.num, data_dir)
            synthetic.generate(
                data_dir,
                config.data.synthetic.num,
                config.data.synthetic.seed,
                synthetic_render_size(config),
                body_model_path=body_model_path,
                val_fraction=config.data.val_fraction,
                yaw_range_deg=config.data.synthetic.yaw_range_deg,
                frames_per_sequence=config.data.synthetic.frames_per_sequence,
            )
        _barrier("synthetic_data")
    if config.data.source == "folder":
        if not os.path.isfile(ann):
            raise ConfigError(f"config 'data.annotations': expected an annotation file, {ann!r} does not exist")
        if not os.path.isdir(root):
            raise ConfigError(f"config 'data.image_root': expected an image directory, {root!r} does not exist")
    elif not os.path.isdir(data_dir):
        raise ConfigError(f"config 'data.dir': expected a TFDS data directory, {data_dir!r} does not exist")
    return data_dir, ann, root


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        multihost_utils.sync_global_devices(name)


def make_source(config, split: str, paths: tuple[str, str, str]):
    """The source of `split`. Folder sources: rows of data.annotations by `annotations.split_indices`;
    the validation split (split == data.val_split) reads data.val_annotations whole when set
    (SPIN's Human3.6M files: h36m_train.npz holds the training subjects only)."""
    from hmr_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    data_dir, ann, root = paths
    if config.data.source == "tfds":
        return pipeline.TfdsSource(data_dir=data_dir, split=split)
    val_ann = config.data.get("val_annotations", "")  # absent in runs written before it existed
    if split and split == config.data.val_split and val_ann:
        val_ann = val_ann if os.path.isabs(val_ann) else os.path.join(data_dir, val_ann)
        if not os.path.isfile(val_ann):
            raise ConfigError(f"config 'data.val_annotations': expected an annotation file, {val_ann!r} does not exist")
        return pipeline.FolderSource(annotations=val_ann, image_root=root, split=None)
    return pipeline.FolderSource(
        annotations=ann, image_root=root, split=split or None, val_fraction=config.data.val_fraction
    )


def make_input(config, source, *, train: bool, start_step: int = 0):
    """This host's batch iterator (per-host batch = global batch / process count); training
    iterators hold the decoded images in memory when data.cache_decoded_mb allows."""
    from hmr_jax.data import pipeline  # pylint: disable=g-import-not-at-top

    n = jax.process_count()
    batch = (config.data.batch_size if train else config.data.eval_batch_size) // n
    augment = augment_lib.AugmentConfig.from_mapping({**config.data.augment, "img_size": config.data.img_size})
    return pipeline.make_iterator(
        source,
        batch_size=batch,
        train=train,
        augment=augment,
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=n,
        resample_ratio=config.data.resample_ratio if train else 1.0,
        strict=config.data.strict,
        shuffle_buffer=config.data.shuffle_buffer,
        threads=config.data.threads or None,
        cache_mb=config.data.get("cache_decoded_mb", 0.0) if train else 0.0,
    )


# ------------------------------------------------------------------------------------ host helpers


class StopRequest:
    """SIGTERM handler: sets a flag the loop checks (it then saves a checkpoint and exits)."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):  # pylint: disable=unused-argument
        logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
        self.requested = True


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def nonfinite_terms(metrics: Mapping[str, Any]) -> list[str]:
    """Names of the metrics whose value is NaN or inf."""
    return sorted(k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v, np.float64))))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The resolved config as workdir/config.json and a python file defining `get_config()`."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(workdir, "config.py"), "w") as f:
        f.write(
            '"""Resolved config of this run (written by hmr_jax.train); usable as --config."""\n\n'
            "import json\n\nimport ml_collections\n\n_CONFIG = r'''\n" + text + "\n'''\n\n\n"
            "def get_config(arg=None):\n    del arg\n"
            "    return ml_collections.ConfigDict(json.loads(_CONFIG))\n"
        )


def make_writer(workdir: str, is_main: bool):
    """clu metric writer (TensorBoard + logging) on process 0, logging only elsewhere."""
    from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorBoard)

    return metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=False)


def append_jsonl(path: str, step: int, values: Mapping[str, float]) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def draw_predictions(
    images: np.ndarray, vertices: np.ndarray, faces: np.ndarray, focal: float, cols: int, min_size: int = 128
) -> np.ndarray:
    """Contact sheet: each input crop beside the predicted mesh drawn over it (uint8)."""
    from hmr_jax import render  # pylint: disable=g-import-not-at-top

    mean, std = np.asarray(augment_lib.IMAGENET_MEAN), np.asarray(augment_lib.IMAGENET_STD)
    tiles = []
    for img, verts in zip(images, vertices):
        rgb = np.clip((img * std + mean) * 255.0, 0, 255).astype(np.uint8)  # (H, W, 3)
        up = max(1, min_size // rgb.shape[0])  # small crops: render at a viewable size
        rgb = np.repeat(np.repeat(rgb, up, axis=0), up, axis=1)
        h, w = rgb.shape[:2]
        result = render.render_mesh(verts, faces, focal * up, (w / 2.0, h / 2.0), (h, w))
        tiles += [rgb, render.overlay(rgb, result)]
    return render.contact_sheet(tiles, cols=2 * cols)


# ------------------------------------------------------------------------------------- time budget


def process_start_time() -> float:
    """When this process started (seconds since the epoch; Linux: /proc, so a re-executed process
    counts from its first start), else now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def cost_once_compiled(wait_seconds: float, call_seconds: list[float]) -> float:
    """What a pass of len(call_seconds) jitted calls costs once compiled: the waits between them
    (input) plus every call at the mean of the calls after the first (the first one compiles
    when the pass is the first); one call: its own time."""
    calls = list(call_seconds)
    if len(calls) < 2:
        return float(wait_seconds) + float(sum(calls))
    return float(wait_seconds) + len(calls) * float(np.mean(calls[1:]))


def steps_within_budget(
    *,
    step: int,
    seconds_left: float,
    step_seconds: float,
    floor: int,
    cap: int,
    eval_every: int,
    final_eval: bool,
    eval_seconds: float,
    image_every: int,
    image_seconds: float,
) -> int:
    """The largest run length N in [floor, cap] whose remaining steps (step + 1 .. N), evaluations
    (every eval_every-th step and, if final_eval, at N) and image grids (every image_every-th
    step) take at most `seconds_left`; `floor` when even that does not fit."""

    def seconds(n: int) -> float:
        evals = (n // eval_every - step // eval_every) if eval_every else 0
        if final_eval and (not eval_every or n % eval_every):
            evals += 1
        images = (n // image_every - step // image_every) if image_every else 0
        return (n - step) * step_seconds + evals * eval_seconds + images * image_seconds

    lo, hi = floor, max(floor, cap)
    if seconds(lo) > seconds_left:
        return floor
    while lo < hi:  # seconds(n) grows with n: the last n that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if seconds(mid) <= seconds_left else (lo, mid - 1)
    return lo


class BudgetPlanner:
    """train.time_budget_min: sets the run's length from the measured speed so that the whole run,
    from `start_time` (data generation, compilation, evaluations included), ends within the budget.

    The length is first planned once `WARMUP_WINDOWS` logging windows after the first have been
    timed, then re-planned at every logging step from the speed of the last `WINDOWS` windows and
    the slowest evaluation / image grid so far, each timed as it costs once compiled (the first
    call of a jitted function compiles; `cost_once_compiled`; guessed until one has run): shorter
    as soon as the budget needs it, longer only by more than `GROW` (the learning-rate schedule
    follows the length, `TrainState.num_steps`: no jitter from noise).
    """

    WARMUP_WINDOWS = 3  # timed windows (after the first, which holds the compilation) before planning
    WINDOWS = 4  # logging windows whose mean step time is the speed
    MARGIN = 0.98  # of the time left: noise between re-plans
    TAIL_SECONDS = 5.0  # after the last step: checkpoint, curves, writer (~1.5 s measured)
    GROW = 0.01  # a longer plan replaces the current one only if longer by more than this fraction
    GUESS_SECONDS = 10.0  # an evaluation / image grid until one has been timed

    def __init__(self, config, start_time: float, *, final_eval: bool):
        tc = config.train
        self.deadline = start_time + 60.0 * float(tc.time_budget_min)
        self.cap = int(tc.num_steps)
        self.eval_every = int(tc.eval_every) if final_eval else 0
        self.image_every, self.final_eval = int(tc.image_every), final_eval
        self.windows: list[float] = []  # seconds per step of each logging window
        self.eval_seconds: float | None = None  # the slowest so far; None until one has been timed
        self.image_seconds: float | None = None

    def window(self, seconds_per_step: float) -> None:
        self.windows.append(seconds_per_step)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds = max(seconds, self.eval_seconds or 0.0)

    def drew_images(self, seconds: float) -> None:
        self.image_seconds = max(seconds, self.image_seconds or 0.0)

    def plan(self, step: int, num_steps: int, now: float) -> int | None:
        """The run's new length, or None to keep `num_steps` (too few timings yet, or about as long)."""
        timed = self.windows[1:]  # the first window holds the compilation
        if len(timed) < self.WARMUP_WINDOWS:
            return None
        step_seconds = float(np.mean(timed[-self.WINDOWS :]))
        eval_seconds = self.GUESS_SECONDS if self.eval_seconds is None else self.eval_seconds
        image_seconds = self.GUESS_SECONDS if self.image_seconds is None else self.image_seconds
        left = self.MARGIN * (self.deadline - now) - self.TAIL_SECONDS
        n = steps_within_budget(
            step=step,
            seconds_left=left,
            step_seconds=step_seconds,
            floor=step,
            cap=self.cap,
            eval_every=self.eval_every,
            final_eval=self.final_eval,
            eval_seconds=eval_seconds,
            image_every=self.image_every,
            image_seconds=image_seconds,
        )
        return n if n < num_steps or n > (1.0 + self.GROW) * num_steps else None


# --------------------------------------------------------------------------------------------- loop


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, start_time: float | None = None
) -> dict[str, Any]:
    """Train (resuming from workdir/checkpoints if any), evaluate, checkpoint, log.

    `start_time` (seconds since the epoch; default now) starts train.time_budget_min's clock.

    Returns {'state', 'step', 'train' (last logged metrics), 'eval' (last validation metrics),
    'best_metric', 'best_step', 'stopped_early', 'interrupted'}.
    """
    # Stage 1: config and run directory (before anything is read or compiled).
    start_time = time.time() if start_time is None else start_time
    config_checks.validate_config(config, jax.device_count(), jax.process_count())
    is_main = jax.process_index() == 0
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        write_config(config, workdir)
    mesh = make_mesh()
    stop = StopRequest()  # SIGTERM from here on: checkpoint at the next step, then return
    previous_handler = signal.signal(signal.SIGTERM, stop) if _in_main_thread() else None
    try:
        with jax.set_mesh(mesh):
            return _train(config, workdir, mesh, is_main, stop, start_time)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _train(config, workdir: str, mesh, is_main: bool, stop: StopRequest, start_time: float) -> dict[str, Any]:
    from hmr_jax import body_model  # pylint: disable=g-import-not-at-top

    # Stage 2: body model and data.
    body_model_path = config.body_model_path or str(body_model.default_body_model_path())
    smpl_host = smpl.load(body_model_path)
    paths = prepare_data(config, workdir, body_model_path)
    labels = _training_labels(config, paths)  # read once: the regressor's start and the baseline
    config = resolve_mean_params(config, paths, labels)  # the regressor's start, kept in config.json
    if is_main:
        write_config(config, workdir)
    train_source = make_source(config, config.data.train_split, paths)
    val_source = make_source(config, config.data.val_split, paths) if config.data.val_split else None
    smpl_model = replicate(smpl_host, mesh)
    prior = replicate(load_prior(config.adversarial.prior_file), mesh) if config.adversarial.prior_file else None

    # Stage 3: models, state (sharded), checkpoint restore.
    models = make_models(config)
    manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    meta = {"best_metric": None, "best_step": None, "bad_evals": 0, "stopped_early": False}
    restored = ckpt_lib.restore(manager, abstract_state(config, models, mesh))
    if restored is not None:
        state, saved_meta = restored
        meta.update(saved_meta)
        logging.info("Resumed from %s at step %d", manager.directory, int(state.step))
    else:
        state = create_sharded_state(config, models, mesh)
    budget = float(config.train.time_budget_min) > 0
    if not budget:  # the config's length (a resumed run may be extended), else the planned one
        state = dataclasses.replace(state, num_steps=replicate(np.int32(config.train.num_steps), mesh))
    step = int(jax.device_get(state.step))
    train_iter = make_input(config, train_source, train=True, start_step=step)  # resumes the data too
    joint_set = train_iter.joint_set
    check_keypoint_head(config, joint_set)
    host_regressors = load_regressors(config, joint_set)
    regressors = replicate(host_regressors, mesh) if host_regressors else None
    train_body, train_regressors = training_body(config, smpl_host, host_regressors)
    if train_body is smpl_host:  # every vertex: the step uses the copies already on the devices
        train_body, train_regressors = smpl_model, regressors
    else:
        train_body = replicate(train_body, mesh)
        train_regressors = replicate(train_regressors, mesh) if train_regressors else None

    # Stage 4: compiled steps (state donated; batch sharded over 'data'; the rest replicated).
    replicated = NamedSharding(mesh, P())
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    train_step = jax.jit(
        make_train_step(config, models, joint_set), donate_argnums=(0,), out_shardings=(state_sharding, replicated)
    )
    eval_step = jax.jit(make_eval_step(config, models, joint_set), out_shardings=replicated)
    predict = jax.jit(make_predict(config, models))
    plateau_step = jax.jit(
        functools.partial(update_plateau, models.plateau_tx), donate_argnums=(0,), out_shardings=state_sharding
    )

    baseline = replicate(mean_body(*labels), mesh) if val_source is not None and labels is not None else None

    def evaluate(state) -> tuple[dict[str, float], float]:
        """The validation metrics, and what the evaluation costs once compiled (seconds)."""
        sums, wait, calls = None, 0.0, []
        t = time.time()
        for batch in make_input(config, val_source, train=False):
            batch = to_global(_batch_arrays(batch), mesh)
            t_call = time.time()
            out = jax.device_get(eval_step(state, batch, smpl_model, regressors, baseline))
            wait, t = wait + t_call - t, time.time()
            calls.append(t - t_call)
            sums = out if sums is None else {k: sums[k] + out[k] for k in out}
        return finalize_eval(sums), cost_once_compiled(wait + time.time() - t, calls)

    # Stage 5: writers, image batch, signal handler.
    writer = make_writer(workdir, is_main)
    metrics_path = os.path.join(workdir, METRICS_FILE)
    image_dir = os.path.join(workdir, "images")
    image_batch = None
    if config.train.image_every:
        source = val_source or train_source
        first = next(iter(make_input(config, source, train=False)))
        image_batch = to_global({"image": first["image"]}, mesh)["image"]
    focal = config.images.focal_length_224 * config.data.img_size / 224.0

    num_steps = int(jax.device_get(state.num_steps))
    tc = config.train
    # A resumed run keeps the length its first run planned (checkpointed in the state).
    planner = (
        BudgetPlanner(config, start_time, final_eval=val_source is not None and bool(tc.eval_every))
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
        planned = _broadcast_int(planner.plan(step, num_steps, time.time()))
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
        return dataclasses.replace(state, num_steps=replicate(np.int32(num_steps), mesh))

    log_handlers, clear_bar = [], None
    try:
        bar = _progress_bar(is_main and tc.progress_bar, num_steps, step)
        if not bar.disable:  # log lines (absl's handler under app.run) clear the bar's line first
            log_handlers, clear_bar = list(logging.getLogger().handlers), _bar_clearing_filter(bar)
        for handler in log_handlers:
            handler.addFilter(clear_bar)
        t0, s0 = time.time(), step
        while step < num_steps and not meta["stopped_early"]:
            batch = to_global(_batch_arrays(next(train_iter)), mesh)
            state, metrics = train_step(state, batch, train_body, prior, train_regressors)
            step += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == num_steps:
                values = jax.device_get(metrics)
                bad = nonfinite_terms({k: v for k, v in values.items() if k != "skipped"})
                if bad and tc.nan_policy == "stop":
                    raise FloatingPointError(
                        f"non-finite training values at step {step}: "
                        + ", ".join(f"{k}={float(values[k])}" for k in bad)
                        + f" (metrics are checked every train.log_every={tc.log_every} steps; "
                        f"train.nan_policy='skip' skips such updates instead)"
                    )
                elapsed = time.time() - t0
                rate = (step - s0) * config.data.batch_size / max(elapsed, 1e-9)
                values = {k: float(v) for k, v in values.items()}
                values["perf/images_per_sec"] = rate
                if planner is not None:
                    planner.window(elapsed / max(step - s0, 1))
                    state = replan(state, step)
                    values["budget/num_steps"] = float(num_steps)
                writer.write_scalars(step, values)
                if is_main:
                    append_jsonl(metrics_path, step, values)
                bar.set_postfix(loss=f"{values['loss/total']:.4g}", img_s=f"{rate:.1f}")
                result["train"] = values
                t0, s0 = time.time(), step
            best_value = None
            if val_source is not None and tc.eval_every and (step % tc.eval_every == 0 or step == num_steps):
                result["eval"], eval_seconds = evaluate(state)
                if planner is not None:
                    planner.evaluated(eval_seconds)
                writer.write_scalars(step, result["eval"])
                if is_main:
                    append_jsonl(metrics_path, step, result["eval"])
                value = result["eval"][config.early_stopping.metric]
                best_value = value
                if meta["best_metric"] is None or value < meta["best_metric"] - config.early_stopping.min_delta:
                    meta.update(best_metric=float(value), best_step=int(step), bad_evals=0)
                    save(state, step, value)
                else:
                    meta["bad_evals"] += 1
                    patience = config.early_stopping.patience
                    if patience and meta["bad_evals"] >= patience:
                        logging.info(
                            "Early stopping at step %d: %s did not improve for %d evaluations (best %.6g at step %s)",
                            step,
                            config.early_stopping.metric,
                            meta["bad_evals"],
                            meta["best_metric"],
                            meta["best_step"],
                        )
                        meta["stopped_early"] = True
                if config.optim.plateau.enabled:
                    state = plateau_step(state, jnp.asarray(value, jnp.float32))
                t0 = time.time()  # do not count evaluation time in images/s
            if image_batch is not None and step % tc.image_every == 0:
                t_image = time.time()
                vertices = _gather(predict(state, image_batch, smpl_model))
                if planner is not None and planner.image_seconds is None:
                    t_image = time.time()  # that call compiled: time the grid as it costs from now on
                    vertices = _gather(predict(state, image_batch, smpl_model))
                if is_main:
                    # Spread over the batch (neighbouring validation samples are often one video).
                    pick = np.linspace(0, len(vertices) - 1, min(tc.num_images, len(vertices))).astype(int)
                    sheet = draw_predictions(
                        _gather(image_batch)[pick],
                        vertices[pick],
                        np.asarray(smpl_host.faces),
                        focal,
                        cols=min(4, len(pick)),
                    )
                    os.makedirs(image_dir, exist_ok=True)
                    from hmr_jax import render  # pylint: disable=g-import-not-at-top

                    render.save_png(os.path.join(image_dir, f"step_{step:07d}.png"), sheet)
                    writer.write_images(step, {"predictions": sheet[None]})
                if planner is not None:
                    planner.drew_images(time.time() - t_image)
                t0 = time.time()
            check_stop = jax.process_count() == 1 or step % tc.log_every == 0
            if check_stop and _any_process(stop.requested):
                result["interrupted"] = True
                save(state, step, best_value)
                logging.info("Stopped by signal at step %d; checkpoint saved.", step)
                break
            if (tc.checkpoint_every and step % tc.checkpoint_every == 0 and last_saved != step) or (
                meta["stopped_early"] and last_saved != step
            ):
                save(state, step, best_value)
        bar.close()
        if last_saved != step:
            save(state, step)
        result["stopped_early"] = bool(meta["stopped_early"])
    finally:
        for handler in log_handlers:
            handler.removeFilter(clear_bar)
        manager.wait_until_finished()
        writer.flush()
    if is_main and os.path.exists(metrics_path):
        from hmr_jax import plot  # pylint: disable=g-import-not-at-top

        plot.plot_run(workdir)
    writer.close()
    result.update(state=state, step=step, best_metric=meta["best_metric"], best_step=meta["best_step"])
    return result


_UNREAD = object()


def resolve_mean_params(
    config: ml_collections.ConfigDict, paths: tuple[str, str, str], labels: Any = _UNREAD
) -> ml_collections.ConfigDict:
    """A copy of `config` with model.mean_pose (72 axis-angle numbers) and model.mean_betas (10)
    filled from model.mean_params: 'train' -> the mean of the training split's SMPL labels (as
    `mean_body`; folder sources, or tfds records built with their means), a path -> its `pose`
    ((72,) axis-angle or (144,) 6d in SPIN's layout, `regressor.mean_pose_from_file`) and `shape` ((10,))
    arrays, as SPIN's smpl_mean_params.npz;
    'zero' leaves them empty (`regressor.default_mean_params`). Already filled values are kept.
    `labels`: `_training_labels(config, paths)` when the caller has read them already."""
    from hmr_jax.data import annotations as ann_lib  # pylint: disable=g-import-not-at-top
    from hmr_jax.models import regressor as regressor_lib  # pylint: disable=g-import-not-at-top

    m = config.model
    if len(m.mean_pose) or m.mean_params == "zero":
        return config
    key = "config 'model.mean_params'"
    if m.mean_params == "train":
        if config.data.source == "folder":
            if labels is _UNREAD:
                labels = _training_labels(config, paths)
            if labels is None:
                raise ConfigError(
                    f"{key}: 'train' needs SMPL labels in the training split, found none in "
                    f"{paths[1]!r}; use 'zero' or an .npz of mean parameters"
                )
            pose, betas = ann_lib.mean_smpl_axis_angle(*labels)
        else:
            from hmr_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top

            split = config.data.train_split or "train"
            meta = tfds_builder.load_builder(paths[0]).info.metadata
            if f"mean_pose_{split}" not in meta:
                raise ConfigError(
                    f"{key}: 'train' needs the split's mean SMPL parameters in the records' "
                    f"metadata (mean_pose_{split}), missing in {paths[0]!r} (built by an "
                    "older version: rebuild it); or use 'zero' or an .npz of mean parameters"
                )
            pose, betas = np.asarray(meta[f"mean_pose_{split}"]), np.asarray(meta[f"mean_shape_{split}"])
    else:
        with np.load(m.mean_params, allow_pickle=False) as f:
            if "pose" not in f or "shape" not in f:
                raise ConfigError(
                    f"{key}: {m.mean_params!r} must hold 'pose' ((72,) axis-angle or (144,) 6d) and "
                    f"'shape' ((10,)), found {sorted(f.keys())}"
                )
            try:
                pose = regressor_lib.mean_pose_from_file(f["pose"])
            except ValueError as e:
                raise ConfigError(f"{key}: {m.mean_params!r}: {e}") from None
            betas = np.asarray(f["shape"], np.float64).reshape(-1)
    if np.asarray(betas).shape != (10,):
        raise ConfigError(f"{key}: expected 10 mean betas, found shape {np.shape(betas)}")
    config = copy.deepcopy(config)
    config.model.mean_pose = tuple(float(v) for v in np.asarray(pose).reshape(72))
    config.model.mean_betas = tuple(float(v) for v in np.asarray(betas).reshape(10))
    return config


def _training_labels(config, paths) -> tuple[np.ndarray, np.ndarray] | None:
    """(pose (N, 72), shape (N, 10)) of the training split's SMPL-labelled rows (folder sources;
    None for tfds or when no row has SMPL labels)."""
    if config.data.source != "folder":
        return None
    from hmr_jax.data import annotations as ann_lib  # pylint: disable=g-import-not-at-top

    ann = ann_lib.load(paths[1])
    rows = (
        ann_lib.split_indices(ann, config.data.train_split, val_fraction=config.data.val_fraction)
        if config.data.train_split
        else np.arange(len(ann.pose))
    )
    rows = rows[np.asarray(ann.has_smpl)[rows] > 0]
    if len(rows) == 0:
        return None
    return np.asarray(ann.pose)[rows], np.asarray(ann.shape)[rows]


def training_mean_body(config, paths) -> dict[str, np.ndarray] | None:
    """Mean pose / shape of the training split's SMPL labels (folder sources), or None."""
    labels = _training_labels(config, paths)
    return None if labels is None else mean_body(*labels)


def _batch_arrays(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep the arrays the steps use (drops e.g. 'index'), as float32 where floating."""
    keys = ("image", "keypoints_2d", "joints_3d", "pose", "shape", "has_smpl", "has_joints_3d", "mask")
    return {k: np.asarray(batch[k], np.float32) for k in keys if k in batch}


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _broadcast_int(value: int | None) -> int | None:
    """Process 0's value on every process (None: -1 on the wire)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    out = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if value is None else value)))
    return None if out < 0 else out


def _in_main_thread() -> bool:
    import threading  # pylint: disable=g-import-not-at-top

    return threading.current_thread() is threading.main_thread()


def _progress_bar(enabled: bool, total: int, initial: int):
    import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1)


def _bar_clearing_filter(bar) -> Callable[[logging.LogRecord], bool]:
    """A log-handler filter that clears `bar`'s line before each record is written, so that log
    lines start on a line of their own instead of running on from the bar's (which is redrawn
    below them at its next update). Lets every record through."""

    def clear(record: logging.LogRecord) -> bool:
        del record
        bar.clear()
        return True

    return clear

"""Optimisers (optax): learning-rate schedules, per-module rates, reduce-on-plateau."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hmr_jax import config_checks

PyTree = Any
Batch = Mapping[str, Any]


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

"""Config checks for training: `validate_config` raises `ConfigError` naming the first bad key.

Runs before any data is read or anything is compiled (DESIGN.md: invalid config values fail
before compilation with a message naming the key). The choices a key may take are the tuples
below; the trainer builds its optimisers, models and evaluation from the same names.
"""

import json
import math
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from hmr_jax import losses
from hmr_jax.data import augment_config as augment_lib
from hmr_jax.fitting import objective
from hmr_jax.models import keypoint_head

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "step")
DECAY_TO_END_SCHEDULES = ("warmup_cosine", "warmup_linear")  # reach end_factor * lr at the run's end
NAN_POLICIES = ("stop", "skip")
GEN_MODULES = ("encoder", "keypoint_head", "regressor")  # the generator's top-level params (models/hmr.py)
ROT_REPRS = ("aa", "6d")
HIDDEN_ACTIVATIONS = ("relu", "none")  # models.regressor.HIDDEN_ACTIVATIONS
ENCODER_DEPTHS = (18, 34, 50)
DTYPES = ("float32", "bfloat16")
EVAL_METRICS = ("mpjpe", "pa_mpjpe", "pve", "v2v_l2")
STAGES = ("train", "evaluate", "predict")


class ConfigError(ValueError):
    """A config value is missing or invalid; the message names the key."""


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError):
            raise ConfigError(f"config: missing key '{key}'") from None
    return node


def _check(config, key: str, ok: Callable[[Any], bool], expected: str) -> Any:
    value = _get(config, key)
    try:
        good = ok(value)
    except Exception:  # pylint: disable=broad-except  (a wrong type fails the check)
        good = False
    if not good:
        raise ConfigError(f"config '{key}': expected {expected}, found {value!r}")
    return value


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(config, key):
    return _check(config, key, lambda v: _is_int(v) and v > 0, "a positive integer")


def _nonneg_int(config, key):
    return _check(config, key, lambda v: _is_int(v) and v >= 0, "an integer >= 0")


def _nonneg(config, key):
    return _check(config, key, lambda v: _is_num(v) and v >= 0, "a finite number >= 0")


def _positive(config, key):
    return _check(config, key, lambda v: _is_num(v) and v > 0, "a finite number > 0")


def _unit(config, key):
    return _check(config, key, lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]")


def _check_fitting(config) -> None:
    """config.fitting: the fields of `fitting.FitConfig`, each valid (its error names the key)."""
    try:
        objective.from_config(_get(config, "fitting"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config 'fitting': {str(e).removeprefix('fitting.').removeprefix('fitting: ')}") from None


def _one_of(config, key, names):
    return _check(config, key, lambda v: v in names, f"one of {list(names)}")


def _file_or_empty(config, key):
    return _check(config, key, lambda v: isinstance(v, str) and (not v or os.path.isfile(v)), "'' or an existing file")


def _str(config, key):
    return _check(config, key, lambda v: isinstance(v, str), "a path or ''")


def _validate_optimizer(config, prefix: str, num_steps: int) -> None:
    name = _one_of(config, f"{prefix}.name", OPTIMIZERS)
    _positive(config, f"{prefix}.learning_rate")
    _nonneg(config, f"{prefix}.clip_norm")
    if name in ("adam", "adamw"):
        _unit(config, f"{prefix}.b1")
        _unit(config, f"{prefix}.b2")
        _positive(config, f"{prefix}.eps")
    _nonneg(config, f"{prefix}.weight_decay")
    for module in _get(config, prefix).get("lr_scale", {}):
        _positive(config, f"{prefix}.lr_scale.{module}")
    if name == "sgd":
        _unit(config, f"{prefix}.momentum")
    sched = _one_of(config, f"{prefix}.schedule", SCHEDULES)
    _nonneg_int(config, f"{prefix}.warmup_steps")
    if sched in DECAY_TO_END_SCHEDULES:
        _unit(config, f"{prefix}.end_factor")
    if sched == "step":
        _positive_int(config, f"{prefix}.decay_every")
        _check(config, f"{prefix}.decay_factor", lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]")
    if _get(config, f"{prefix}.warmup_steps") > num_steps:
        raise ConfigError(
            f"config '{prefix}.warmup_steps': expected <= train.num_steps ({num_steps}), "
            f"found {_get(config, prefix + '.warmup_steps')}"
        )


def validate_config(
    config: ml_collections.ConfigDict, num_devices: int | None = None, num_processes: int = 1, stage: str = "train"
) -> None:
    """Check every config value the trainer uses; raise `ConfigError` naming the first bad key.

    Runs before any data is read or anything is compiled. `stage` 'evaluate' / 'predict' checks a
    run's config.json (`check_run_config`): files only training reads (pretrained encoder,
    adversarial prior, a mean-parameter .npz already resolved into model.mean_pose) need not
    exist any more, nor, for 'predict', the data's joint regressor.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {list(STAGES)}, found {stage!r}")
    training = stage == "train"
    _nonneg_int(config, "seed")
    # data
    _one_of(config, "data.source", ("folder", "tfds"))
    _check(config, "data.dir", lambda v: isinstance(v, str), "a dataset directory ('' = beside the workdir)")
    _check(config, "data.annotations", lambda v: isinstance(v, str), "an annotation .npz path (folder source)")
    _check(config, "data.image_root", lambda v: isinstance(v, str), "an image directory ('' = data.dir)")
    _check(config, "data.train_split", lambda v: isinstance(v, str), "a split name ('' = whole file)")
    _check(config, "data.val_split", lambda v: isinstance(v, str), "a split name ('' for no validation)")
    _check(
        config,
        "data.val_annotations",
        lambda v: isinstance(v, str),
        "an annotation .npz read whole for validation ('' = the val_split of data.annotations)",
    )
    _check(config, "data.val_fraction", lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)")
    _check(config, "data.resample_ratio", lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]")
    _positive_int(config, "data.shuffle_buffer")
    _nonneg_int(config, "data.threads")
    if "cache_decoded_mb" in config.data:  # absent in runs written before it existed
        _nonneg(config, "data.cache_decoded_mb")
    _check(config, "data.strict", lambda v: isinstance(v, bool), "True or False")
    _nonneg_int(config, "data.synthetic.num")
    _nonneg_int(config, "data.synthetic.seed")
    _positive_int(config, "data.synthetic.frames_per_sequence")
    _check(
        config,
        "data.synthetic.yaw_range_deg",
        lambda v: _is_num(v) and 0 <= v <= 180,
        "a number of degrees in [0, 180]",
    )
    _check(config, "data.img_size", lambda v: _is_int(v) and v >= 16, "an integer >= 16")
    _check(
        config,
        "data.synthetic.render_size",
        lambda v: _is_int(v) and (v == 0 or v >= 16),
        "0 (= data.img_size) or an integer >= 16",
    )
    batch = _positive_int(config, "data.batch_size")
    eval_batch = _positive_int(config, "data.eval_batch_size")
    (_file_or_empty if stage != "predict" else _str)(config, "data.joint_regressor")
    _check(config, "data.augment", lambda v: hasattr(v, "items"), "a group of augmentation settings")
    try:
        augment_lib.AugmentConfig.from_mapping({**config.data.augment, "img_size": config.data.img_size})
    except ValueError as e:
        raise ConfigError(f"config 'data.augment': {e}") from None
    _file_or_empty(config, "body_model_path")
    for n, key in ((batch, "data.batch_size"), (eval_batch, "data.eval_batch_size")):
        if num_devices is not None and n % num_devices:
            raise ConfigError(f"config '{key}': expected a multiple of the {num_devices} devices, found {n}")
        if n % num_processes:
            raise ConfigError(f"config '{key}': expected a multiple of the {num_processes} processes, found {n}")
    # model
    _one_of(config, "model.depth", ENCODER_DEPTHS)
    _positive_int(config, "model.width")
    _one_of(config, "model.dtype", DTYPES)
    _one_of(config, "model.rot_repr", ROT_REPRS)
    resolved = len(config.model.get("mean_pose", ()) or ()) > 0  # filled in by training (config.json)
    _check(
        config,
        "model.mean_params",
        lambda v: v in ("train", "zero") or (isinstance(v, str) and (os.path.isfile(v) or (resolved and not training))),
        "'train', 'zero' or an existing .npz of mean parameters",
    )
    _check(config, "model.mean_cam", lambda v: len(v) == 3 and all(_is_num(x) for x in v), "3 numbers (s, tx, ty)")
    _check(
        config,
        "model.mean_pose",
        lambda v: (
            (len(v) in (0, 72) or (len(v) == 144 and config.model.rot_repr == "6d")) and all(_is_num(x) for x in v)
        ),
        "() or 72 axis-angle numbers (or, with rot_repr '6d', 144 numbers: 6d in the regressor's layout)",
    )
    _check(config, "model.mean_betas", lambda v: len(v) in (0, 10) and all(_is_num(x) for x in v), "() or 10 numbers")
    _check(config, "model.hidden", lambda v: all(_is_int(h) and h > 0 for h in v), "a tuple of positive ints")
    _one_of(config, "model.hidden_activation", HIDDEN_ACTIVATIONS)
    _check(config, "model.dropout", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
    _positive_int(config, "model.n_iter")
    _nonneg(config, "model.final_init_gain")
    _unit(config, "model.bn_momentum")
    _check(config, "model.zero_init_residual", lambda v: isinstance(v, bool), "True or False")
    (_file_or_empty if training else _str)(config, "model.pretrained_encoder")
    _check(
        config,
        "model.init_from",
        lambda v: isinstance(v, str) and (not v or not training or os.path.isfile(os.path.join(v, "config.json"))),
        "'' or a workdir holding config.json (written by hmr_jax.train or hmr_jax.import_checkpoint)",
    )
    head = _check(config, "model.keypoint_head.enabled", lambda v: isinstance(v, bool), "True or False")
    _positive_int(config, "model.keypoint_head.channels")
    _positive_int(config, "model.keypoint_head.num_keypoints")
    _check(
        config, "model.keypoint_head.stride", lambda v: v in keypoint_head.STRIDES, f"one of {keypoint_head.STRIDES}"
    )
    _check(config, "model.keypoint_head.input_scale", lambda v: _is_num(v) and v > 0, "a positive number")
    for key in ("model.disc.joint_hidden", "model.disc.pose_hidden", "model.disc.shape_hidden"):
        _check(
            config,
            key,
            lambda v: len(v) > 0 and all(_is_int(h) and h > 0 for h in v),
            "a non-empty tuple of positive ints",
        )
    # losses
    weights = _check(config, "loss_weights", lambda v: hasattr(v, "keys"), "a group of loss weights")
    missing = sorted(set(losses.LOSS_TERMS) - set(weights.keys()))
    extra = sorted(set(weights.keys()) - set(losses.LOSS_TERMS))
    if missing or extra:
        raise ConfigError(
            f"config 'loss_weights': expected exactly the terms {list(losses.LOSS_TERMS)}, "
            f"missing {missing}, unknown {extra}"
        )
    for name in losses.LOSS_TERMS:
        _nonneg(config, f"loss_weights.{name}")
    for name in ("keypoints_2d", "keypoint_heatmap", "lift"):
        if weights[name] > 0 and not head:
            raise ConfigError(
                f"config 'loss_weights.{name}': {weights[name]} needs the keypoint head "
                "(model.keypoint_head.enabled=True); set it to 0 without the head"
            )
    lr_scale = config.optim.gen.get("lr_scale", {})
    for module in lr_scale:  # any other name would scale nothing, silently
        if module not in GEN_MODULES:
            raise ConfigError(
                f"config 'optim.gen.lr_scale.{module}': not a module of the generator; "
                f"expected one of {list(GEN_MODULES)}"
            )
    head_scale = lr_scale.get("keypoint_head", 1.0)
    if head_scale != 1.0 and not head:
        raise ConfigError(
            f"config 'optim.gen.lr_scale.keypoint_head': {head_scale} needs the keypoint head "
            "(model.keypoint_head.enabled=True); set it to 1 without the head"
        )
    _nonneg(config, "adversarial.disc_loss_weight")
    prior = (_file_or_empty if training else _str)(config, "adversarial.prior_file")
    if prior and training:
        check_prior_file(prior)
    # training loop
    num_steps = _positive_int(config, "train.num_steps")
    _nonneg(config, "train.time_budget_min")
    _positive_int(config, "train.log_every")
    _nonneg_int(config, "train.eval_every")
    _nonneg_int(config, "train.checkpoint_every")
    _positive_int(config, "train.keep_checkpoints")
    _nonneg_int(config, "train.image_every")
    _positive_int(config, "train.num_images")
    _one_of(config, "train.nan_policy", NAN_POLICIES)
    _check(config, "train.progress_bar", lambda v: isinstance(v, bool), "True or False")
    _nonneg(config, "train.lift_noise_px")
    _check(config, "train.heatmap_sigma_px", lambda v: _is_num(v) and v > 0, "a positive number")
    _positive_int(config, "train.vertex_loss_stride")
    _check(config, "train.fit_in_loop", lambda v: isinstance(v, bool), "True or False")
    _check(config, "train.fit_threshold", lambda v: _is_num(v) and v > 0, "a positive number")
    _nonneg_int(config, "train.fit_table_size")
    _check(config, "train.fit_pose_prior", lambda v: isinstance(v, str), "a GMM prior file ('' = the default)")
    if training:
        _file_or_empty(config, "train.fit_pose_prior")
    _check(config, "data.hide_labels_fraction", lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
    _check_fitting(config)
    _validate_optimizer(config, "optim.gen", num_steps)
    _validate_optimizer(config, "optim.disc", num_steps)
    _check(config, "optim.plateau.enabled", lambda v: isinstance(v, bool), "True or False")
    _check(config, "optim.plateau.factor", lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)")
    _positive_int(config, "optim.plateau.patience")
    _nonneg_int(config, "optim.plateau.cooldown")
    _nonneg(config, "optim.plateau.rtol")
    _nonneg(config, "optim.plateau.min_scale")
    _check(
        config,
        "early_stopping.metric",
        lambda v: v.startswith("val/") and v[4:] in EVAL_METRICS,
        f"one of {['val/' + m for m in EVAL_METRICS]}",
    )
    _nonneg_int(config, "early_stopping.patience")
    _nonneg(config, "early_stopping.min_delta")
    if (config.early_stopping.patience or config.optim.plateau.enabled) and not (
        config.data.val_split and config.train.eval_every
    ):
        raise ConfigError(
            "config 'train.eval_every': early stopping / reduce-on-plateau need periodic "
            f"validation (data.val_split and train.eval_every > 0), found "
            f"val_split={config.data.val_split!r}, eval_every={config.train.eval_every}"
        )
    _positive(config, "images.focal_length_224")
    _check(config, "eval.flip_test", lambda v: isinstance(v, bool), "True or False")
    _check(config, "eval.h36m_regressor", lambda v: isinstance(v, str), "a path or ''")


def check_prior_file(path: str) -> None:
    with np.load(path, allow_pickle=False) as f:
        for key, width in (("pose", 72), ("shape", 10)):
            if key not in f.files:
                raise ConfigError(
                    f"config 'adversarial.prior_file': {path!r} needs arrays 'pose' (N, 72) and "
                    f"'shape' (N, 10), found keys {sorted(f.files)}"
                )
            if f[key].ndim != 2 or f[key].shape[1] != width or f[key].shape[0] == 0:
                raise ConfigError(
                    f"config 'adversarial.prior_file': {path!r} array {key!r}: expected "
                    f"(N, {width}) with N > 0, found {f[key].shape}"
                )


def check_run_config(config: ml_collections.ConfigDict, workdir: str, stage: str) -> list[str]:
    """Check a run's config.json (as `workdir.load_run_config` read it) before evaluate / predict
    use it: `validate_config` for `stage`, its error naming the file (ConfigError, one line).

    Returns the keys whose values differ from config.py, the copy that hmr_jax.train wrote beside it
    (['data.img_size: 32 -> 48', ...]; [] when they agree or config.py is absent or unreadable):
    the checkpoint was trained with config.py's values, so an edit there changes what the model
    sees (a crop size, the regressor's iterations) without changing any parameter's shape.
    """
    path = os.path.join(workdir, "config.json")
    try:
        validate_config(config, stage=stage)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    written = _config_py_values(os.path.join(workdir, "config.py"))
    if written is None:
        return []
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in _diff(written, config.to_dict(), "")]


def _config_py_values(path: str) -> dict | None:
    """The JSON text that `workdir.write_config` embeds in config.py, parsed (the file is not run)."""
    try:
        with open(path) as f:
            text = f.read()
        start = text.index("_CONFIG = r'''") + len("_CONFIG = r'''")
        return json.loads(text[start : text.index("'''", start)])
    except (OSError, ValueError):
        return None


def _diff(a: Any, b: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}.{k}" if prefix else str(k))
        return out
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731  (JSON has no tuples)
    return [] if norm(a) == norm(b) else [(prefix, a, b)]

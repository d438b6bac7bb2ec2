"""The regressor's starting point: mean SMPL pose and shape, from the training labels, a file, or zero."""

import copy
import logging

import jax.numpy as jnp
import ml_collections
import numpy as np

from hmr_jax.config_checks import ConfigError
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import tfds_builder
from hmr_jax.models import regressor as regressor_lib
from hmr_jax.state import generator_kwargs


def mean_body(pose: np.ndarray, shape: np.ndarray) -> dict[str, np.ndarray]:
    """The 'mean pose and shape' predictor (`annotations.mean_smpl`): pose (N, 72) axis-angle,
    shape (N, K) -> {'pose_rotmat' (24, 3, 3), 'betas' (K,)}."""

    rot, betas = ann_lib.mean_smpl(pose, shape)
    return {"pose_rotmat": rot, "betas": betas}


def resolve_mean_params(
    config: ml_collections.ConfigDict,
    paths: tuple[str, str, str],
    labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> ml_collections.ConfigDict:
    """A copy of `config` with model.mean_pose (72 axis-angle numbers) and model.mean_betas (10)
    filled from model.mean_params: 'train' -> the mean of the training split's SMPL labels (as
    `mean_body`; folder sources, or tfds records built with their means), a path -> its `pose`
    ((72,) axis-angle or (144,) 6d in SPIN's layout, `regressor.mean_pose_from_file`) and `shape` ((10,))
    arrays, as SPIN's smpl_mean_params.npz;
    'zero' leaves them empty (`regressor.default_mean_params`). Already filled values are kept.
    `labels`: `training_labels(config, paths)` when the caller has read them (else read here)."""

    m = config.model
    if len(m.mean_pose) or m.mean_params == "zero":
        return config
    key = "config 'model.mean_params'"
    if m.mean_params == "train":
        if config.data.source == "folder":
            labels = training_labels(config, paths) if labels is None else labels
            if labels is None:
                raise ConfigError(
                    f"{key}: 'train' needs SMPL labels in the training split, found none in "
                    f"{paths[1]!r}; use 'zero' or an .npz of mean parameters"
                )
            pose, betas = ann_lib.mean_smpl_axis_angle(*labels)
        else:
            split = config.data.train_split or "train"
            meta = tfds_builder.load_builder(paths[0]).info.metadata
            if f"mean_pose_{split}" not in meta:
                raise ConfigError(
                    f"{key}: 'train' needs the split's mean SMPL parameters in the records' "
                    f"metadata (mean_pose_{split}), missing in {paths[0]!r} (built by an "
                    "rebuild the records); or use 'zero' or an .npz of mean parameters"
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


def training_labels(config, paths) -> tuple[np.ndarray, np.ndarray] | None:
    """(pose (N, 72), shape (N, 10)) of the training split's SMPL-labelled rows that the input
    pipeline uses (rows `annotations.find_invalid` rejects, e.g. a non-finite pose or shape, are
    skipped here as there); folder sources; None for tfds (whose records store these means) or
    when no such row exists."""
    if config.data.source != "folder":
        return None
    ann = ann_lib.load(paths[1])
    rows = (
        ann_lib.split_indices(ann, config.data.train_split, val_fraction=config.data.val_fraction)
        if config.data.train_split
        else np.arange(len(ann.pose))
    )
    bad = ann_lib.find_invalid(ann.select(rows))
    rows = np.asarray([r for i, r in enumerate(rows) if i not in bad], np.int64)
    rows = rows[np.asarray(ann.has_smpl)[rows] > 0]
    if len(rows) == 0:
        return None
    return np.asarray(ann.pose)[rows], np.asarray(ann.shape)[rows]


def regressor_start(config) -> dict[str, np.ndarray]:
    """The regressor's starting point, its fixed mean parameters: {'pose_rotmat' (24,3,3), 'betas' (10,),
    'cam' (3,)} -- what the model predicts before training, for any image (the mean-pose baseline).

    The same values `models.hmr.build_generator` gets from `state.generator_kwargs(config)`
    (their `mean_pose` / `mean_betas` / `mean_cam` if given, else `regressor.default_mean_params`).
    """
    kw = generator_kwargs(config)
    rot_repr = kw.get("rot_repr", "aa")
    pose, betas, cam = regressor_lib.default_mean_params(rot_repr)
    if kw.get("mean_pose") is not None:
        pose = regressor_lib.convert_mean_pose(kw["mean_pose"], rot_repr)
    betas = np.asarray(kw["mean_betas"] if kw.get("mean_betas") is not None else betas, np.float32).reshape(-1)
    cam = np.asarray(kw["mean_cam"] if kw.get("mean_cam") is not None else cam, np.float32).reshape(-1)
    rotmat = np.asarray(regressor_lib.theta_to_rotmat(jnp.asarray(pose, jnp.float32), rot_repr), np.float32)
    return {"pose_rotmat": rotmat, "betas": betas, "cam": cam}


def training_mean(config, paths) -> dict[str, np.ndarray] | None:
    """`mean_body` of the training split's SMPL labels (folder sources; the trainer's
    val/mean_baseline), or None when there are none or they cannot be read (a warning says why)."""
    if not config.data.train_split:
        return None
    try:
        labels = training_labels(config, paths)
    except (ValueError, FileNotFoundError) as e:
        logging.warning("training-set mean baseline unavailable: %s", e)
        return None
    return None if labels is None else mean_body(*labels)

"""What a run needs from its data, as the trainer, evaluate and predict use it: resolved paths,
first-use generation of the synthetic set, sources, per-host iterators, joint regressors, the
adversarial prior, and the training body."""

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from hmr_jax import config_checks, sharding, skeleton, smpl
from hmr_jax.config_checks import ConfigError
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import augment_config as augment_lib
from hmr_jax.data import pipeline, synthetic
from hmr_jax.data.synthetic.writer import GENERATOR_VERSION

PyTree = Any
Batch = Mapping[str, Any]


def load_prior(path: str) -> dict[str, np.ndarray]:
    """The adversarial prior file: real SMPL poses (N, 72) and shapes (N, 10), float32."""
    config_checks.check_prior_file(path)
    with np.load(path, allow_pickle=False) as f:
        return {"pose": np.asarray(f["pose"], np.float32), "shape": np.asarray(f["shape"], np.float32)}


def load_regressors(config, joint_set: str) -> dict[str, np.ndarray] | None:
    """The vertex-to-joint regressor a dataset's joint set needs (None for 'smpl24')."""
    if joint_set == "smpl24":
        return None
    if not config.data.joint_regressor:
        raise ConfigError(
            f"config 'data.joint_regressor': the dataset's joint set {joint_set!r} needs a "
            f"({skeleton.get_joint_set(joint_set).num_joints}, V) regressor file, found ''"
        )
    return {joint_set: smpl.load_regressor(config.data.joint_regressor, skeleton.get_joint_set(joint_set).num_joints)}


def loss_body(
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
    """data.synthetic.render_size, 0 = data.img_size."""
    return int(config.data.synthetic.render_size or config.data.img_size)


def resolve_data_paths(config, workdir: str) -> tuple[str, str, str]:
    """(data dir, annotation file, image root); data.dir '' means the synthetic set beside the workdir,
    `<workdir>/../<generator version>_<render size>px_<num>[_yaw<deg>][_fps<n>]` (a newer generator
    writes a new folder instead of reusing an older one's images)."""
    syn = config.data.synthetic
    suffix = "" if syn.yaw_range_deg == 180.0 else f"_yaw{syn.yaw_range_deg:g}"
    suffix += "" if syn.frames_per_sequence == 8 else f"_fps{syn.frames_per_sequence}"
    data_dir = config.data.dir or os.path.join(
        os.path.dirname(os.path.abspath(workdir)),
        f"{GENERATOR_VERSION}_{synthetic_render_size(config)}px_{config.data.synthetic.num}{suffix}",
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
        sharding.barrier("synthetic_data")
    if config.data.source == "folder":
        if not os.path.isfile(ann):
            raise ConfigError(f"config 'data.annotations': expected an annotation file, {ann!r} does not exist")
        if not os.path.isdir(root):
            raise ConfigError(f"config 'data.image_root': expected an image directory, {root!r} does not exist")
    elif not os.path.isdir(data_dir):
        raise ConfigError(f"config 'data.dir': expected a TFDS data directory, {data_dir!r} does not exist")
    return data_dir, ann, root


def make_source(config, split: str, paths: tuple[str, str, str]):
    """The source of `split`. Folder sources: rows of data.annotations by `annotations.split_indices`;
    the validation split (split == data.val_split) reads data.val_annotations whole when set
    (SPIN's Human3.6M files: h36m_train.npz holds the training subjects only)."""
    data_dir, ann, root = paths
    if config.data.source == "tfds":
        return pipeline.TfdsSource(data_dir=data_dir, split=split)
    val_ann = config.data.val_annotations
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
        cache_mb=config.data.cache_decoded_mb if train else 0.0,
    )


def step_arrays(batch: Mapping[str, np.ndarray], fitting: bool = False) -> dict[str, np.ndarray]:
    """Keep the arrays the steps use, as float32; with `fitting` (train.fit_in_loop) also each
    sample's index (int32) and augmentation (rot, flip)."""
    keys = ("image", "keypoints_2d", "joints_3d", "pose", "shape", "has_smpl", "has_joints_3d", "mask")
    out = {k: np.asarray(batch[k], np.float32) for k in keys if k in batch}
    if fitting:
        out.update(index=np.asarray(batch["index"], np.int32), rot=batch["rot"], flip=batch["flip"])
    return out


HIDE_STRIDE = 0.6180339887498949  # golden-ratio steps: any fraction of indices, spread evenly


def hidden_labels(index: np.ndarray, fraction: float) -> np.ndarray:
    """(B,) bool: the samples whose SMPL and 3D labels config data.hide_labels_fraction hides
    (the same samples every epoch: frac(index x 0.618...) < fraction)."""
    return np.modf(np.asarray(index, np.float64) * HIDE_STRIDE)[0] < fraction


def hide_labels(batch: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """The training batch with has_smpl and has_joints_3d set to 0 for `hidden_labels` samples."""
    if fraction <= 0:
        return batch
    keep = (~hidden_labels(batch["index"], fraction)).astype(np.float32)
    return {**batch, "has_smpl": batch["has_smpl"] * keep, "has_joints_3d": batch["has_joints_3d"] * keep}


def index_space(config, source) -> int:
    """The number of sample indices of a training source ('index' of its batches lies below it)."""
    if isinstance(source, pipeline.TfdsSource):
        from hmr_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top  (tfds only when used)

        meta = tfds_builder.load_builder(source.data_dir).info.metadata
        positions = np.asarray(meta[f"indices_{source.split}"], np.int64)
        return int(positions.max()) + 1 if len(positions) else 0
    ann = ann_lib.load(source.annotations)
    if source.split is None:
        return len(ann)
    return len(ann_lib.split_indices(ann, source.split, val_fraction=source.val_fraction))

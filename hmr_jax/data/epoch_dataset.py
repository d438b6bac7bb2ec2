"""One epoch of one host's batches as a tf.data.Dataset (`make_dataset`; the order of the stages:
the pipeline's docstring): the epoch's order and augmentation parameters, elements with their crop
geometry, the per-image decode + warp + normalisation, the per-batch label transforms. Imports no
jax."""

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

from hmr_jax import skeleton
from hmr_jax.data.annotation_transforms import augment_annotations
from hmr_jax.data.augment import warp_normalize
from hmr_jax.data.augment_config import AugmentConfig, identity_params, sample_params
from hmr_jax.data.crop_geometry import crop_geometry
from hmr_jax.data.image_cache import ImageCache
from hmr_jax.data.image_decode import cached_crop, decode_crop
from hmr_jax.data.sources import FolderSource, Plan, TfdsSource, check_box_crop

# rot (radians) and flip (0 / 1): the augmentation of each sample (fitting in the loop undoes it).
BATCH_KEYS = (
    "image", "keypoints_2d", "joints_3d", "pose", "shape", "has_smpl", "has_joints_3d", "index", "rot", "flip",
)  # fmt: skip
GEOMETRY_GROUP = 64  # TFDS records per vectorised crop-geometry call (before decoding)
_ANN_KEYS = ("center", "scale", "part", "S", "pose", "shape", "has_smpl", "has_joints_3d")


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) & 0x7FFFFFFF


def epoch_order(plan: Plan, train: bool, seed: int, epoch: int) -> np.ndarray | None:
    """Folder sources: the epoch's permutation of this host's samples (None: index order)."""
    if not train or plan.ann is None:
        return None
    return np.random.default_rng(_epoch_seed(seed, epoch)).permutation(len(plan.host_indices))


def _raw_dataset(
    plan: Plan,
    order: np.ndarray | None,
    cfg: AugmentConfig,
    params: dict[str, np.ndarray],
    *,
    shuffle_seed: int | None,
    shuffle_buffer: int,
    skip: int,
) -> tf.data.Dataset:
    """Elements {'image': bytes or 'path', annotation fields, 'index', crop geometry + this
    epoch's augmentation parameters} in the epoch's order (`skip` samples skipped)."""
    if plan.ann is not None:
        idx = plan.host_indices if order is None else plan.host_indices[order]
        idx = idx[skip:]
        ann = plan.ann
        fields = {k: getattr(ann, k)[idx] for k in _ANN_KEYS}
        root = plan.source.image_root
        if plan.cache is None:
            fields["path"] = np.array([os.path.join(root, n) for n in ann.imgname[idx]], dtype=object)
        else:
            fields["row"] = plan.cache.rows[idx]
            cfg = dataclasses.replace(cfg, max_decode_ratio=plan.cache.max_ratio)
        fields["imgname"] = np.array([str(n) for n in ann.imgname[idx]], dtype=object)
        fields["index"] = idx.astype(np.int64)
        # every sample's crop geometry for the epoch, in one vectorised call (not per image)
        p = {k: v[idx] for k, v in params.items()}
        geo = crop_geometry(fields["center"], fields["scale"], p, cfg)
        fields.update({k: v.numpy() for k, v in geo.items()}, rot=p["rot"], flip=p["flip"], noise=p["noise"])
        return tf.data.Dataset.from_tensor_slices(fields)
    # TFDS: read the record range that holds this host's samples, in index order; per group of
    # records (vectorised): drop the ones resampling leaves out, crop geometry + parameters.
    hi = plan.host_indices
    if len(hi) == 0:
        ds = plan.builder.as_dataset(split=f"{plan.source.split}[:0]")
    else:
        pos = np.searchsorted(plan.record_positions, [hi[0], hi[-1]])
        split = f"{plan.source.split}[{int(pos[0])}:{int(pos[1]) + 1}]"
        ds = plan.builder.as_dataset(split=split, shuffle_files=False)
    if shuffle_seed is not None:  # the buffer holds records before resampling: scale it to match
        kept = max(len(hi), 1) / max(int(pos[1]) + 1 - int(pos[0]), 1) if len(hi) else 1.0
        ds = ds.shuffle(max(1, round(shuffle_buffer / kept)), seed=shuffle_seed, reshuffle_each_iteration=False)
    keep = tf.constant(plan.resample_keep)
    table = {k: tf.constant(v) for k, v in params.items()}
    names = (*_ANN_KEYS, "image", "imgname", "index")

    def geometry(g):
        g = {k: tf.boolean_mask(g[k], tf.gather(keep, g["index"])) for k in names}
        p = {k: tf.gather(v, g["index"]) for k, v in table.items()}
        geo = crop_geometry(g["center"], g["scale"], p, cfg)
        return {**g, **geo, "rot": p["rot"], "flip": p["flip"], "noise": p["noise"]}

    return ds.batch(GEOMETRY_GROUP).map(geometry).unbatch().skip(skip)


def _params_table(plan: Plan, cfg: AugmentConfig, train: bool, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Augmentation parameters of every sample id for this epoch (identity in eval)."""
    n = int(plan.host_indices.max()) + 1 if len(plan.host_indices) else 1
    if train and cfg.enabled:
        return sample_params(np.random.default_rng([seed, epoch, 0xA06]), n, cfg)
    return identity_params(n)


def _image_fn(cfg: AugmentConfig, strict: bool, cache: ImageCache | None = None):
    """Per sample: read, decode (the window; or the cached pixels), warp, noise + normalise;
    geometry is left for the batch. A crop that misses the image raises (ignore_errors drops and
    counts it; strict: fatal)."""

    def fn(ex):
        if cache is not None:
            pixels, hw, nonempty = cached_crop(cache.images, ex["branch"], ex["row"], ex["window"])
            inverse = ex["inverse"]
        else:
            data = tf.io.read_file(ex["path"]) if "path" in ex else ex["image"]
            pixels, inverse, hw, nonempty = decode_crop(
                data, ex["branch"], ex["window"], ex["inverse"], cfg.max_decode_ratio
            )
        image = warp_normalize(pixels, inverse, ex["noise"], cfg.img_size, tf.equal(ex["rot"], 0.0))
        tf.debugging.Assert(nonempty, ["box outside the image: sample", ex["index"], ex["imgname"], "image (h, w)", hw])
        keep = {k: tf.cast(ex[k], tf.float32) for k in ("part", "S", "pose", "shape", "has_smpl", "has_joints_3d")}
        return {
            **keep,
            "image": image,
            "crop_matrix": ex["crop_matrix"],
            "rot": ex["rot"],
            "flip": ex["flip"],
            "index": tf.cast(ex["index"], tf.int64),
        }

    return fn


def _batch_fn(flip_perm: tuple[int, ...]):
    perm = tf.constant(flip_perm, tf.int32)

    def fn(b):
        geo = augment_annotations(b, b["crop_matrix"], b["rot"], b["flip"], perm)
        return {
            "image": b["image"],
            **geo,
            "shape": b["shape"],
            "has_smpl": b["has_smpl"],
            "has_joints_3d": b["has_joints_3d"],
            "index": b["index"],
            "rot": tf.cast(b["rot"], tf.float32),
            "flip": tf.cast(b["flip"], tf.float32),
        }

    return fn


def make_dataset(
    source: FolderSource | TfdsSource,
    *,
    batch_size: int,
    train: bool,
    augment: AugmentConfig | dict | Any = AugmentConfig(),
    seed: int = 0,
    epoch: int = 0,
    skip_samples: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    resample_ratio: float = 1.0,
    strict: bool = False,
    shuffle_buffer: int = 1024,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    threads: int | None = None,
    cache_mb: float = 0.0,
    _plan: Plan | None = None,
) -> tf.data.Dataset:
    """One epoch of this host's batches as a tf.data.Dataset of BATCH_KEYS (the last batch may be
    short: `make_iterator` drops it in training and pads it in eval). `skip_samples` skips that
    many samples of the epoch's order before any decoding (resume). `threads`: a private tf.data
    thread pool of that size (e.g. 1 to measure one core). `shuffle_buffer` (TFDS sources only)
    holds encoded images: about buffer / resample_ratio x JPEG size of memory. `cache_mb` > 0
    (folder sources): decode this host's images once and keep them in memory when they all have
    one size and format and take at most that many MB (JPEGs at every decode ratio the crops can
    use: up to 1.33 x the pixels), else a warning and the files as usual; the batches are the same
    either way (to float rounding)."""
    cfg = AugmentConfig.from_mapping(augment)
    if not train:
        cfg = cfg.eval_config()
    plan = _plan or Plan(
        source,
        train=train,
        resample_ratio=resample_ratio,
        process_index=process_index,
        process_count=process_count,
        strict=strict,
        cache_mb=cache_mb,
        augment=cfg,
    )
    if _plan is None:
        check_box_crop(plan, cfg)
    shuffle_seed = _epoch_seed(seed, epoch) if train else None
    order = epoch_order(plan, train, seed, epoch)
    params = _params_table(plan, cfg, train, seed, epoch)
    ds = _raw_dataset(
        plan, order, cfg, params, shuffle_seed=shuffle_seed, shuffle_buffer=shuffle_buffer, skip=skip_samples
    )
    ds = ds.map(_image_fn(cfg, strict, plan.cache), num_parallel_calls=num_parallel_calls, deterministic=True)
    if not strict:
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(
        _batch_fn(skeleton.get_joint_set(plan.joint_set).flip_perm),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning: AUTOTUNE parallelism and prefetch then stay at min(16, cores). With it on, an
    # epoch's iterator, when released, waits for its autotuning thread to end its current sleep
    # (the period grows towards a minute): training stalled 17-41 s at some epoch boundaries and
    # evaluations (main thread idle in ~RootDataset::Iterator); without it, no stall and the same
    # throughput.
    options.autotune.enabled = False
    if threads is not None:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)

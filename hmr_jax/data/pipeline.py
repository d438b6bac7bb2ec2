"""tf.data input pipeline (numpy + TensorFlow; no jax): per-host batches as numpy dicts.

    src = FolderSource(annotations='ann.npz', image_root='images/')      # straight from the folder
    src = TfdsSource(data_dir='/data/tfds', split='train')               # or built TFDS records
    it = make_iterator(src, batch_size=64, train=True, augment=AugmentConfig(img_size=224),
                       seed=0, start_step=0, process_index=0, process_count=1, resample_ratio=0.2)
    batch = next(it)   # image (B,S,S,3) f32, keypoints_2d (B,24,3), joints_3d (B,24,4), pose (B,72),
                       # shape (B,10), has_smpl (B,), has_joints_3d (B,), index (B,) int64
                       # (+ mask (B,) f32 in eval mode)

Order (train): the split's samples -> drop unusable annotations (non-finite, scale <= 0; and
missing image files for folders) -> resample (k = round(1/ratio): every k-th frame number within
each sequence when the annotations carry `frame`, else every k-th position in the split; see
`annotations.resample_rank`) -> equal contiguous chunk per host
(floor(n / process_count)) -> per epoch: shuffle with seed (seed, epoch) -> skip the samples of
steps already done -> crop geometry (augment.crop_geometry), vectorised over the epoch (folders)
or over groups of 64 records (TFDS), with parameters drawn in numpy per epoch from (seed, epoch)
for each sample id (the same whatever the parallelism) -> parallel read + decode + fused warp /
noise / normalisation of each image -> batch -> keypoint / joint / pose transforms once per
batch -> prefetch.
`batch_size` is the PER-HOST batch. Each host yields the same number of batches.
`cache_mb` > 0 (folder sources; `data.cache_decoded_mb` in training): the host's images are
decoded once into memory (JPEGs at each DCT scaling the crops can use) when they all have one size
and format and fit in that many MB; the per-sample read + decode then becomes a gather, and the
batches stay the same (to float rounding). Else a warning, and the files are read as above.

TFDS records may hold box crops instead of full frames (tfds_builder `crop_px`): read the same
way, with annotations already in the stored crop's pixels; an augmentation that would reach
outside the stored square raises (ValueError naming the needed `--crop-factor`), a crop size
above the stored box resolution warns.

Resume: `start_step = N` (global step) restarts at epoch N // steps_per_epoch, skipping the
(N % steps_per_epoch) * batch_size samples already used in that epoch (before decoding them).
Folder sources shuffle with a full permutation per epoch; TFDS sources with a `shuffle_buffer`
over index-ordered records (cheaper, but a local shuffle; the buffer holds records before
resampling, so it is scaled by 1 / resample_ratio to hold about `shuffle_buffer` kept ones).

Bad data: images that fail to decode / are missing at run time, or whose box misses the image,
are dropped (non-strict), counted per epoch in `iterator.epoch_stats` and reported with a
warning at the end of the epoch; `strict=True` raises (naming the sample(s)). Such run-time
drops shift the batch boundaries of the rest of that epoch, so exact resume holds for data
without run-time drops (annotation problems and missing files are found up front and do not
shift anything).

Eval (`train=False`): no shuffle, no augmentation, all samples (host chunks of
ceil(n / process_count)), last batch padded (repeating the last sample) with `mask` (B,) = 0.
"""

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from hmr_jax import skeleton
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data.augment import (
    DECODE_RATIOS,
    AugmentConfig,
    augment_annotations,
    cached_crop,
    crop_geometry,
    decode_crop,
    decode_ratios_needed,
    identity_params,
    required_crop_factor,
    sample_params,
    warp_normalize,
)

BATCH_KEYS = ("image", "keypoints_2d", "joints_3d", "pose", "shape", "has_smpl", "has_joints_3d", "index")
GEOMETRY_GROUP = 64  # TFDS records per vectorised crop-geometry call (before decoding)
_ANN_KEYS = ("center", "scale", "part", "S", "pose", "shape", "has_smpl", "has_joints_3d")


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Image folder + annotation npz (SPIN or 4D-Humans layout). split=None: the whole file;
    'train' / 'validation': annotations.split_indices (subjects, else the last val_fraction)."""

    annotations: str
    image_root: str
    split: str | None = None
    val_fraction: float = 0.1
    check_files: bool = True


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Records built by tfds_builder.build(data_dir, ...)."""

    data_dir: str
    split: str = "train"


@dataclasses.dataclass
class EpochStats:
    epoch: int
    expected: int  # samples this host should produce this epoch (after the resume skip)
    produced: int = 0  # samples that came out of the pipeline (incl. a dropped remainder)
    dropped_remainder: int = 0
    skipped: int = 0  # run-time drops: corrupt / missing image, box outside the image
    skipped_indices: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------- the sources
class _Plan:
    """Everything known before reading images: which samples, in which order, on this host."""

    def __init__(
        self,
        source,
        *,
        train: bool,
        resample_ratio: float,
        process_index: int,
        process_count: int,
        strict: bool,
        cache_mb: float,
        augment: AugmentConfig,
    ):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index: expected in [0, {process_count}), found {process_index}")
        self.source = source
        self.invalid: dict[int, str] = {}
        self.box_crop = None
        if isinstance(source, FolderSource):
            ann = ann_lib.load(source.annotations)
            rows = (
                np.arange(len(ann))
                if source.split is None
                else ann_lib.split_indices(ann, source.split, val_fraction=source.val_fraction)
            )
            self.ann = ann.select(rows)
            self.joint_set = ann.joint_set
            positions = np.arange(len(rows))
            ranks = ann_lib.resample_rank(self.ann)  # (len(rows),)
            bad = ann_lib.find_invalid(self.ann)
            if source.check_files:
                for i, r in ann_lib.find_missing_images(self.ann, source.image_root).items():
                    bad.setdefault(i, r)
            self.invalid = dict(sorted(bad.items()))
            positions = positions[[p not in bad for p in positions]] if bad else positions
        elif isinstance(source, TfdsSource):
            from hmr_jax.data import tfds_builder  # tfds import only when used

            self.builder = tfds_builder.load_builder(source.data_dir)
            meta = self.builder.info.metadata
            key = f"indices_{source.split}"
            if key not in meta:
                raise ValueError(
                    f"TfdsSource: split {source.split!r} not in {source.data_dir!r}; found "
                    f"{[k[8:] for k in meta if k.startswith('indices_')]}"
                )
            positions = np.asarray(meta[key], np.int64)  # stored (kept) sample indices, record order
            rank_key = f"resample_rank_{source.split}"  # aligned with positions (absent: old builds)
            ranks = np.zeros(int(positions.max()) + 1 if len(positions) else 0, np.int64)
            ranks[positions] = np.asarray(meta[rank_key], np.int64) if rank_key in meta else positions
            self.joint_set = meta["joint_set"]
            self.box_crop = meta.get("box_crop")  # None: full frames (also builds before box crops)
            self.ann = None
        else:
            raise TypeError(f"source: expected FolderSource or TfdsSource, found {type(source).__name__}")
        if self.invalid:
            msg = "; ".join(f"#{i} {self.ann.imgname[i]}: {r}" for i, r in list(self.invalid.items())[:10])
            if strict:
                raise ValueError(f"{source}: {len(self.invalid)} unusable sample(s): {msg}")
            warnings.warn(f"{source}: skipping {len(self.invalid)} unusable sample(s): {msg}")
        self.record_positions = positions
        self.resample_keep = ann_lib.resample_mask(ranks, resample_ratio)  # by sample index
        selected = positions[self.resample_keep[positions]]
        n = len(selected)
        per_host = n // process_count if train else math.ceil(n / process_count)
        lo = process_index * per_host
        self.host_indices = selected[lo : lo + per_host]  # sample ids ('index') of this host, in order
        self.per_host = per_host
        if train and per_host == 0:
            raise ValueError(
                f"{source}: no samples for host {process_index} of {process_count} (found {n} after resampling)"
            )
        self.cache = _decode_all(self, cache_mb, augment) if cache_mb > 0 else None


@dataclasses.dataclass(frozen=True)
class _ImageCache:
    images: tuple[tf.Variable, ...]  # this host's images decoded once: (n, h_k, w_k, 3) uint8 per
    # JPEG decode ratio DECODE_RATIOS[k], or one full-size entry
    rows: np.ndarray  # (max sample id + 1,) int32: each sample id's row (-1: none)

    @property
    def max_ratio(self) -> int:
        """The geometry's max_decode_ratio (1: the full-size entry only)."""
        return DECODE_RATIOS[len(self.images) - 1]


def _decode_all(plan: _Plan, limit_mb: float, cfg: AugmentConfig) -> _ImageCache | None:
    """This host's images decoded once into memory, exactly as decode_crop decodes them: JPEGs at
    each ratio 1/r the crops of cfg can ask for (1 + 1/4 + ... of the full size), other formats at
    full size. Folder sources whose images all have one size and fit in `limit_mb` MB; otherwise
    None, with a warning saying why (then read and decoded per sample as usual)."""
    src, ids = plan.source, plan.host_indices
    if not isinstance(src, FolderSource):
        warnings.warn(f"{src}: decoded-image cache: folder sources only; reading the records")
        return None
    if len(ids) == 0:
        return None
    paths = [os.path.join(src.image_root, n) for n in plan.ann.imgname[ids]]
    try:
        data = tf.io.read_file(paths[0])
        h, w = tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2]
        jpeg = bool(tf.io.is_jpeg(data))  # the first file's format stands for all (checked below)
        ratios = decode_ratios_needed(plan.ann.scale[ids], cfg) if jpeg else (1,)
        need_mb = len(ids) * sum(-(-h // r) * -(-w // r) for r in ratios) * 3 / 2**20
        if need_mb > limit_mb:
            warnings.warn(
                f"{src}: decoded-image cache: {len(ids)} images of {h} x {w} (JPEG decode "
                f"ratios {ratios}) need {need_mb:.0f} MB, above the limit of {limit_mb:g} MB; "
                "reading the files"
            )
            return None

        def decode(path):
            data = tf.io.read_file(path)
            tf.debugging.assert_equal(tf.io.is_jpeg(data), jpeg, ["not all of one format:", path])
            if not jpeg:
                return (tf.io.decode_image(data, channels=3, expand_animations=False),)
            return tuple(tf.io.decode_jpeg(data, channels=3, ratio=r) for r in ratios)

        ds = (
            tf.data.Dataset.from_tensor_slices(paths)
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(256)
        )
        arrays = [np.empty((len(ids), -(-h // r), -(-w // r), 3), np.uint8) for r in ratios]
        done = 0
        for b in ds:  # batch() raises unless all one size
            for a, x in zip(arrays, b):
                a[done : done + len(x)] = x.numpy()
            done += len(b[0])
    except (tf.errors.OpError, ValueError) as e:
        warnings.warn(
            f"{src}: decoded-image cache: not every image decodes, or not to one size and "
            f"format ({type(e).__name__}: {str(e)[:300]}); reading the files"
        )
        return None
    rows = np.full(int(ids.max()) + 1, -1, np.int32)
    rows[ids] = np.arange(len(ids), dtype=np.int32)
    images = tuple(tf.Variable(a, trainable=False) for a in arrays)
    logging.info(
        "decoded-image cache: %d images of %d x %d (decode ratios %s), %.0f MB", len(ids), h, w, ratios, need_mb
    )
    return _ImageCache(images, rows)


def _check_box_crop(plan: _Plan, cfg: AugmentConfig) -> None:
    """Records holding box crops must cover every crop the augmentation can ask for."""
    if not plan.box_crop:
        return
    stored, px = plan.box_crop["crop_factor"], plan.box_crop["crop_px"]
    need = required_crop_factor(cfg)
    if need > stored * (1 + 1e-6):
        raise ValueError(
            f"{plan.source}: the records hold box crops of {stored:g} x the box side "
            f"(crop_factor), but this augmentation reaches {need:.3f} x (scale_max "
            f"{cfg.scale_max:g}, rotations up to {cfg.rot_max_deg:g} deg); rebuild the records with "
            f"--crop-factor >= {need:.3f} or narrow data.augment"
        )
    if px / stored < cfg.img_size * (1 - 1e-6):
        warnings.warn(
            f"{plan.source}: the records store the box at {px / stored:.0f} px "
            f"(crop_px {px} / crop_factor {stored:g}), fewer than img_size "
            f"{cfg.img_size}: crops are upsampled (blurred); rebuild with --crop-px >= "
            f"{math.ceil(cfg.img_size * stored)}"
        )


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) & 0x7FFFFFFF


def _epoch_order(plan: _Plan, train: bool, seed: int, epoch: int) -> np.ndarray | None:
    """Folder sources: the epoch's permutation of this host's samples (None: index order)."""
    if not train or plan.ann is None:
        return None
    return np.random.default_rng(_epoch_seed(seed, epoch)).permutation(len(plan.host_indices))


def _raw_dataset(
    plan: _Plan,
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


def _params_table(plan: _Plan, cfg: AugmentConfig, train: bool, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Augmentation parameters of every sample id for this epoch (identity in eval)."""
    n = int(plan.host_indices.max()) + 1 if len(plan.host_indices) else 1
    if train and cfg.enabled:
        return sample_params(np.random.default_rng([seed, epoch, 0xA06]), n, cfg)
    return identity_params(n)


def _image_fn(cfg: AugmentConfig, strict: bool, cache: _ImageCache | None = None):
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
    _plan: _Plan | None = None,
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
    plan = _plan or _Plan(
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
        _check_box_crop(plan, cfg)
    shuffle_seed = _epoch_seed(seed, epoch) if train else None
    order = _epoch_order(plan, train, seed, epoch)
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


class BatchIterator(Iterator):
    """Numpy batches (see module docstring). Attributes: steps_per_epoch (train) / num_batches
    (eval), joint_set, flip_perm, invalid (unusable samples found up front: {index: reason}),
    epoch_stats (list of EpochStats, one per finished epoch), step (next global step)."""

    def __init__(
        self,
        source,
        *,
        batch_size: int,
        train: bool,
        augment=AugmentConfig(),
        seed: int = 0,
        start_step: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        resample_ratio: float = 1.0,
        strict: bool = False,
        num_epochs: int | None = None,
        shuffle_buffer: int = 1024,
        threads: int | None = None,
        cache_mb: float = 0.0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        cfg = AugmentConfig.from_mapping(augment)
        cfg = cfg if train else cfg.eval_config()
        self._plan = _Plan(
            source,
            train=train,
            resample_ratio=resample_ratio,
            process_index=process_index,
            process_count=process_count,
            strict=strict,
            cache_mb=cache_mb,
            augment=cfg,
        )
        self._kw = dict(
            batch_size=batch_size,
            train=train,
            augment=augment,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            resample_ratio=resample_ratio,
            strict=strict,
            shuffle_buffer=shuffle_buffer,
            threads=threads,
        )
        _check_box_crop(self._plan, cfg)
        self.batch_size, self.train, self.strict = batch_size, train, strict
        self.joint_set = self._plan.joint_set
        self.flip_perm = skeleton.get_joint_set(self.joint_set).flip_perm
        self.invalid = self._plan.invalid
        self.epoch_stats: list[EpochStats] = []
        n = self._plan.per_host
        if train:
            self.steps_per_epoch = n // batch_size
            if self.steps_per_epoch == 0:
                raise ValueError(f"{source}: expected at least batch_size={batch_size} samples per host, found {n}")
            self.epoch, within = divmod(start_step, self.steps_per_epoch)
            self._skip = within * batch_size
            self.num_batches = None
        else:
            self.num_batches = math.ceil(n / batch_size)
            self.epoch, self._skip = 0, 0
        self.step = start_step
        self.num_epochs = num_epochs if train else 1
        self._gen = self._generate()

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._gen)

    def _generate(self):
        while self.num_epochs is None or self.epoch < self.num_epochs:
            ds = make_dataset(
                self._plan.source, epoch=self.epoch, skip_samples=self._skip, _plan=self._plan, **self._kw
            )
            expected = len(self._plan.host_indices) - self._skip
            stats = EpochStats(epoch=self.epoch, expected=expected)
            seen: list[np.ndarray] = []
            yielded = 0
            last = None
            it = iter(ds)
            self._template = {
                k: np.zeros((1, *spec.shape[1:]), spec.dtype.as_numpy_dtype) for k, spec in ds.element_spec.items()
            }
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    break
                except tf.errors.OpError as e:  # strict mode only (otherwise errors are ignored)
                    done = stats.produced + self._skip
                    names = self._names_near(done)
                    raise RuntimeError(
                        f"input pipeline (strict): failed in epoch {self.epoch} after "
                        f"{done} samples of this host; next samples: {names}; "
                        f"error: {e.message}"
                    ) from e
                batch = {k: v.numpy() for k, v in batch.items()}
                b = len(batch["index"])
                stats.produced += b
                seen.append(batch["index"])
                if b < self.batch_size:
                    last = batch
                    break
                if self.train:
                    self.step += 1
                else:
                    batch["mask"] = np.ones((b,), np.float32)
                    yielded += 1
                yield batch
            self._finish_epoch(stats, seen)
            if self.train:
                if last is not None:
                    stats.dropped_remainder = len(last["index"])
            else:
                if last is not None:
                    yield self._pad(last)
                    yielded += 1
                while yielded < self.num_batches:  # run-time drops: keep every host's batch count
                    yield self._pad(None)
                    yielded += 1
            self.epoch_stats.append(stats)
            self.epoch += 1
            self._skip = 0

    def _finish_epoch(self, stats: EpochStats, seen: list[np.ndarray]) -> None:
        stats.skipped = stats.expected - stats.produced
        if stats.skipped and self._plan.ann is not None:
            got = set(np.concatenate(seen).tolist()) if seen else set()
            stats.skipped_indices = tuple(int(i) for i in self._expected_order()[self._skip :] if int(i) not in got)
        if stats.skipped:
            names = ""
            if stats.skipped_indices:
                names = ": " + ", ".join(f"#{i} {self._plan.ann.imgname[i]}" for i in stats.skipped_indices[:10])
            msg = (
                f"input pipeline: epoch {stats.epoch}: skipped {stats.skipped} of {stats.expected} "
                f"samples (corrupt / missing image or box outside the image){names}"
            )
            logging.warning(msg)
            warnings.warn(msg)

    def _expected_order(self) -> np.ndarray:
        order = _epoch_order(self._plan, self.train, self._kw["seed"], self.epoch)
        hi = self._plan.host_indices
        return hi if order is None else hi[order]

    def _names_near(self, done: int) -> str:
        if self._plan.ann is None:
            return "(TFDS source: see the error)"
        nxt = self._expected_order()[done : done + self.batch_size * 2]
        return ", ".join(f"#{i} {self._plan.ann.imgname[i]}" for i in nxt[:8])

    def _pad(self, batch: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        B = self.batch_size
        if batch is None:  # a whole padding batch (run-time drops): zeros, mask 0
            batch, n = self._template, 0
        else:
            n = len(batch["index"])
        out = {k: np.concatenate([v, np.repeat(v[-1:], B - len(v), axis=0)]) for k, v in batch.items()}
        out["mask"] = (np.arange(B) < n).astype(np.float32)
        return out


def make_iterator(
    source: FolderSource | TfdsSource,
    *,
    batch_size: int,
    train: bool,
    augment: AugmentConfig | dict | Any = AugmentConfig(),
    seed: int = 0,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    resample_ratio: float = 1.0,
    strict: bool = False,
    num_epochs: int | None = None,
    shuffle_buffer: int = 1024,
    threads: int | None = None,
    cache_mb: float = 0.0,
) -> BatchIterator:
    """Numpy batch iterator; train: endless (or num_epochs), eval: one padded pass. `cache_mb`:
    see make_dataset."""
    return BatchIterator(
        source,
        batch_size=batch_size,
        train=train,
        augment=augment,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
        resample_ratio=resample_ratio,
        strict=strict,
        num_epochs=num_epochs,
        shuffle_buffer=shuffle_buffer,
        threads=threads,
        cache_mb=cache_mb,
    )

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
steps already done -> crop geometry (crop_geometry.crop_geometry), vectorised over the epoch (folders)
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
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from hmr_jax import skeleton
from hmr_jax.data.augment_config import AugmentConfig
from hmr_jax.data.epoch_dataset import epoch_order, make_dataset
from hmr_jax.data.sources import FolderSource, Plan, TfdsSource, check_box_crop


@dataclasses.dataclass
class EpochStats:
    epoch: int
    expected: int  # samples this host should produce this epoch (after the resume skip)
    produced: int = 0  # samples that came out of the pipeline (incl. a dropped remainder)
    dropped_remainder: int = 0
    skipped: int = 0  # run-time drops: corrupt / missing image, box outside the image
    skipped_labels: int = 0  # left out up front for their labels (`annotations.find_invalid`)
    skipped_indices: tuple[int, ...] = ()


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
        self._plan = Plan(
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
        check_box_crop(self._plan, cfg)
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
        stats.skipped_labels = len(self._plan.invalid)
        if stats.skipped or stats.skipped_labels:
            parts = []
            if stats.skipped_labels:
                reasons = sorted(set(self._plan.invalid.values()))
                parts.append(f"skipped {stats.skipped_labels} for their labels ({', '.join(reasons[:5])})")
            if stats.skipped:
                names = ""
                if stats.skipped_indices:
                    names = ": " + ", ".join(f"#{i} {self._plan.ann.imgname[i]}" for i in stats.skipped_indices[:10])
                parts.append(
                    f"skipped {stats.skipped} of {stats.expected} at run time (corrupt / missing image or box outside "
                    f"the image){names}"
                )
            msg = f"input pipeline: epoch {stats.epoch}: " + "; ".join(parts)
            logging.warning(msg)
            warnings.warn(msg)

    def _expected_order(self) -> np.ndarray:
        order = epoch_order(self._plan, self.train, self._kw["seed"], self.epoch)
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

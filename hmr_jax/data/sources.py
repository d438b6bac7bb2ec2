"""Where samples come from (`FolderSource`: images + annotation npz; `TfdsSource`: records built
by tfds_builder) and what a source resolves to on one host before any image is read (`Plan`:
usable samples, resampling, this host's chunk, the optional decoded-image cache). Imports no jax."""

import dataclasses
import math
import warnings

import numpy as np

from hmr_jax.data import annotations as ann_lib
from hmr_jax.data.augment_config import AugmentConfig, required_crop_factor
from hmr_jax.data.image_cache import decode_images


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


class Plan:
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
            ranks = np.zeros(int(positions.max()) + 1 if len(positions) else 0, np.int64)
            ranks[positions] = np.asarray(meta[f"resample_rank_{source.split}"], np.int64)  # aligned with positions
            self.joint_set = meta["joint_set"]
            self.box_crop = meta["box_crop"]  # None: full frames
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
        self.cache = None
        if cache_mb > 0:
            if isinstance(source, FolderSource):
                self.cache = decode_images(source, self.ann, self.host_indices, cache_mb, augment)
            else:
                warnings.warn(f"{source}: decoded-image cache: folder sources only; reading the records")


def check_box_crop(plan: Plan, cfg: AugmentConfig) -> None:
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

"""Augmentation settings (`AugmentConfig`, SPIN's defaults) and the per-sample parameters they
draw (`sample_params`: rotation, scale, flip, channel noise; numpy, drawn up front per epoch so
that they do not depend on tf.data's parallelism)."""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

DECODE_RATIOS = (1, 2, 4, 8)  # libjpeg's DCT-domain scalings 1/r


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Crop size and augmentation ranges (SPIN's defaults). Angles in degrees here (config units)."""

    img_size: int = 224
    enabled: bool = True
    rot_std_deg: float = 30.0
    rot_max_deg: float = 60.0
    rot_prob_zero: float = 0.6
    scale_std: float = 0.25
    scale_min: float = 0.75
    scale_max: float = 1.25
    flip_prob: float = 0.5
    noise_min: float = 0.6
    noise_max: float = 1.4
    max_decode_ratio: int = 8  # JPEG DCT-domain downscaling up to 1/8 (1 = always full resolution)

    def __post_init__(self):
        checks = [
            (self.img_size >= 8, "img_size >= 8", self.img_size),
            (self.rot_std_deg >= 0, "rot_std_deg >= 0", self.rot_std_deg),
            (self.rot_max_deg >= 0, "rot_max_deg >= 0", self.rot_max_deg),
            (0 <= self.rot_prob_zero <= 1, "0 <= rot_prob_zero <= 1", self.rot_prob_zero),
            (self.scale_std >= 0, "scale_std >= 0", self.scale_std),
            (0 < self.scale_min <= self.scale_max, "0 < scale_min <= scale_max", (self.scale_min, self.scale_max)),
            (0 <= self.flip_prob <= 1, "0 <= flip_prob <= 1", self.flip_prob),
            (0 <= self.noise_min <= self.noise_max, "0 <= noise_min <= noise_max", (self.noise_min, self.noise_max)),
            (self.max_decode_ratio in DECODE_RATIOS, f"max_decode_ratio in {DECODE_RATIOS}", self.max_decode_ratio),
        ]
        for ok, expected, found in checks:
            if not ok:
                raise ValueError(f"AugmentConfig: expected {expected}, found {found!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | Any) -> "AugmentConfig":
        """From a dict / ml_collections ConfigDict with (a subset of) the field names; unknown keys fail."""
        if isinstance(cfg, cls):
            return cfg
        items = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"AugmentConfig: unknown keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**items)

    def eval_config(self) -> "AugmentConfig":
        """Same crop size, augmentation off."""
        return dataclasses.replace(self, enabled=False)


def required_crop_factor(cfg: AugmentConfig) -> float:
    """How many box sides around the box centre an augmented crop can reach, along x or y: the
    largest augmentation scale times max |cos t| + |sin t| over the rotations (sqrt(2) from 45 deg).
    Records holding box crops (tfds_builder) must store at least this much."""
    if not cfg.enabled:
        return 1.0
    scale = cfg.scale_max if cfg.scale_std > 0 else min(max(1.0, cfg.scale_min), cfg.scale_max)
    rot = 0.0 if cfg.rot_std_deg == 0 or cfg.rot_prob_zero >= 1 else math.radians(cfg.rot_max_deg)
    extent = math.sqrt(2.0) if rot >= math.pi / 4 else math.cos(rot) + math.sin(rot)
    return scale * extent


def sample_params(rng: np.random.Generator, n: int, cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """n samples' augmentation parameters (numpy, drawn up front per epoch so that tf.data does no
    random-op work): rot (n,) radians, scale (n,), flip (n,) bool, noise (n, 3)."""
    if not cfg.enabled:
        return identity_params(n)
    rot = np.clip(rng.normal(size=n) * cfg.rot_std_deg, -cfg.rot_max_deg, cfg.rot_max_deg)
    rot = np.where(rng.uniform(size=n) < cfg.rot_prob_zero, 0.0, rot)
    sc = np.clip(1.0 + rng.normal(size=n) * cfg.scale_std, cfg.scale_min, cfg.scale_max)
    flip = rng.uniform(size=n) < cfg.flip_prob
    noise = rng.uniform(cfg.noise_min, cfg.noise_max, size=(n, 3))
    return {
        "rot": np.deg2rad(rot).astype(np.float32),
        "scale": sc.astype(np.float32),
        "flip": flip,
        "noise": noise.astype(np.float32),
    }


def identity_params(n: int) -> dict[str, np.ndarray]:
    """n samples' parameters of no augmentation."""
    return {
        "rot": np.zeros(n, np.float32),
        "scale": np.ones(n, np.float32),
        "flip": np.zeros(n, bool),
        "noise": np.ones((n, 3), np.float32),
    }

"""TFDS builder: a folder of images + SPIN-layout annotation npz -> TFDS records (offline).

    from hmr_jax.data import tfds_builder
    builder = tfds_builder.build(data_dir='/data/tfds', image_root='/data/h36m',
                                 annotations='/data/h36m/h36m_train.npz')   # one file: split
    # or annotations={'train': 'train.npz', 'validation': 'val.npz'}
    builder = tfds_builder.load_builder('/data/tfds')                       # later, to read

One annotation file is split by subject when subjects are known (a `subject` field or H36M-style
image names: S1, S5, S6, S7, S8 train; S9, S11 validation), otherwise the last `val_fraction` of
rows is validation. Records keep the encoded image bytes untouched (JPEG or PNG, no re-encoding)
and the annotation tensors; examples are written in index order (`disable_shuffling`), and the
metadata holds the joint set, each split's kept sample indices (`indices_<split>`) and their
resampling ranks (`resample_rank_<split>`, `annotations.resample_rank`: frame order within each
sequence when the annotations carry frames). Unusable samples (missing /
corrupt image, non-finite annotation, box outside the image) are skipped with a warning and
counted in the metadata (`skipped_<split>`); `strict=True` raises instead, naming the sample.

Two image modes (metadata `image_mode`):
- 'full_frame' (the default): the image files' bytes as they are. Lossless and independent of
  the training settings (crop size, augmentation ranges), but every sample decodes its whole
  frame's JPEG (entropy decoding of a 1000x1000 H36M frame alone is ~4 ms on one core).
- 'box_crop' (`crop_px=N`, CLI `--crop-px N`; what 4D-Humans' pre-cropped shards do): each
  record stores only the square around its box that any augmentation can reach: side
  crop_factor x the box side (200 * scale), centred on the box, resampled to N x N px with the
  training crop's own decode + bilinear resampling (outside the image = 0, as there) and
  re-encoded as JPEG (jpeg_quality). The default crop_factor 1.8 covers SPIN's augmentation:
  scale up to 1.25 with any rotation needs 1.25 * sqrt(2) = 1.77 box sides (the rotated crop's
  corners). Use crop_px = 2 x the training img_size (448 for 224): the box then spans 249 stored
  px (1.11 per crop px at augmentation scale 1). All annotations are moved into the stored
  crop's pixel frame (center -> the crop centre, scale -> crop_px / (200 crop_factor), part and
  cam_center mapped, cam_focal scaled; S, pose, shape unchanged), so the pipeline reads these
  records with the same code, and a training crop of them equals the crop of the full frame up
  to the second resampling and the JPEG re-encoding (tests/test_precrop.py). The metadata's
  `box_crop` records crop_px, crop_factor and jpeg_quality; the pipeline refuses an
  augmentation that would reach outside the stored square.
"""

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hmr_jax.data import annotations as ann_lib

NAME = "hmr_folder"
DEFAULT_CROP_FACTOR = 1.8  # >= 1.25 * sqrt(2): SPIN's largest scale at any rotation
DEFAULT_JPEG_QUALITY = 95


def _features() -> tfds.features.FeaturesDict:
    f32 = np.float32
    T = tfds.features.Tensor
    return tfds.features.FeaturesDict(
        {
            "image": T(shape=(), dtype=np.object_),  # encoded bytes, as on disk
            "imgname": tfds.features.Text(),
            "index": T(shape=(), dtype=np.int64),
            "center": T(shape=(2,), dtype=f32),
            "scale": T(shape=(), dtype=f32),
            "part": T(shape=(ann_lib.NUM_JOINTS, 3), dtype=f32),
            "S": T(shape=(ann_lib.NUM_JOINTS, 4), dtype=f32),
            "pose": T(shape=(72,), dtype=f32),
            "shape": T(shape=(10,), dtype=f32),
            "has_smpl": T(shape=(), dtype=f32),
            "has_joints_3d": T(shape=(), dtype=f32),
            "cam_focal": T(shape=(2,), dtype=f32),
            "cam_center": T(shape=(2,), dtype=f32),
            "cam_t": T(shape=(3,), dtype=f32),
            "has_camera": T(shape=(), dtype=f32),
            "subject": tfds.features.Text(),
            "action": tfds.features.Text(),
        }
    )


def check_image(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """((height, width), None) if the image decodes, else (None, reason). Reads every byte of the
    entropy-coded stream but decodes JPEGs at 1/8 scale (PIL draft), so it is cheap."""
    if not os.path.isfile(path):
        return None, f"missing image {path}"
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
        return (h, w), None
    except Exception as e:  # PIL raises many types for corrupt files
        return None, f"corrupt image {path}: {type(e).__name__}: {e}"


class HmrFolder(tfds.core.GeneratorBasedBuilder):
    """Images + annotation npz -> TFDS. Constructor args name the folder (only to build)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(
        self,
        *,
        image_root: str | None = None,
        annotations: str | Mapping[str, str] | None = None,
        val_fraction: float = 0.1,
        strict: bool = False,
        crop_px: int | None = None,
        crop_factor: float = DEFAULT_CROP_FACTOR,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        **kwargs,
    ):
        self._image_root = None if image_root is None else os.fspath(image_root)
        self._annotations = annotations
        self._val_fraction = val_fraction
        self._strict = strict
        self._box_crop = box_crop_options(crop_px, crop_factor, jpeg_quality)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="HMR training data: images + SPIN-layout annotations.",
            features=_features(),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _load_split(self, split: str) -> tuple[ann_lib.Annotations, np.ndarray]:
        if isinstance(self._annotations, Mapping):
            if split not in self._annotations:
                return None, np.zeros((0,), np.int64)
            ann = ann_lib.load(self._annotations[split])
            return ann, np.arange(len(ann))
        ann = ann_lib.load(self._annotations)
        return ann, ann_lib.split_indices(ann, split, val_fraction=self._val_fraction)

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._annotations is None or self._image_root is None:
            raise ValueError(
                "HmrFolder: building needs image_root and annotations (constructor args); "
                "found None. To read an existing dataset use load_builder(data_dir)."
            )
        gens = {}
        joint_sets = set()
        for split in ("train", "validation"):
            ann, rows = self._load_split(split)
            if ann is None:
                continue
            joint_sets.add(ann.joint_set)
            if len(rows) == 0:  # e.g. H36M names of training subjects only: no validation split
                warnings.warn(f"HmrFolder: no samples for split {split!r}; it is not written")
                continue
            keep, bad = self._scan(ann, rows, split)
            self.info.metadata[f"indices_{split}"] = [int(i) for i in range(len(rows)) if keep[i]]
            ranks = ann_lib.resample_rank(ann.select(rows))  # frame order within sequences, else position
            self.info.metadata[f"resample_rank_{split}"] = [int(r) for r in ranks[keep]]
            self.info.metadata[f"skipped_{split}"] = len(bad)
            labelled = rows[keep & (np.asarray(ann.has_smpl)[rows] > 0)]
            if len(labelled):  # the regressor's start for model.mean_params='train'
                pose, shape = ann_lib.mean_smpl_axis_angle(ann.pose[labelled], ann.shape[labelled])
                self.info.metadata[f"mean_pose_{split}"] = [float(v) for v in pose]
                self.info.metadata[f"mean_shape_{split}"] = [float(v) for v in shape]
            gens[split] = self._generate_examples(ann, rows, keep)
        if len(joint_sets) != 1:
            raise ValueError(f"HmrFolder: expected one joint set across splits, found {sorted(joint_sets)}")
        self.info.metadata["joint_set"] = joint_sets.pop()
        self.info.metadata["image_mode"] = "box_crop" if self._box_crop else "full_frame"
        self.info.metadata["box_crop"] = self._box_crop
        return gens

    def _scan(self, ann: ann_lib.Annotations, rows: np.ndarray, split: str):
        sub = ann.select(rows)
        bad = dict(ann_lib.find_invalid(sub))
        sizes = np.zeros((len(rows), 2))
        for i, name in enumerate(sub.imgname):
            if i in bad:
                continue
            hw, reason = check_image(os.path.join(self._image_root, name))
            if reason:
                bad[i] = reason
            else:
                sizes[i] = hw
        ok = np.array([i not in bad for i in range(len(rows))])
        if ok.any():
            outside = ann_lib.find_invalid(sub.select(np.nonzero(ok)[0]), sizes[ok])
            for j, reason in outside.items():
                bad[int(np.nonzero(ok)[0][j])] = reason
        if bad:
            msg = "; ".join(f"#{i} {sub.imgname[i]}: {r}" for i, r in list(sorted(bad.items()))[:10])
            if self._strict:
                raise ValueError(f"HmrFolder ({split}): {len(bad)} unusable sample(s): {msg}")
            warnings.warn(f"HmrFolder ({split}): skipping {len(bad)} unusable sample(s): {msg}")
        return np.array([i not in bad for i in range(len(rows))]), bad

    def _generate_examples(self, ann: ann_lib.Annotations, rows: np.ndarray, keep: np.ndarray):
        zeros2, zeros3 = np.zeros(2, np.float32), np.zeros(3, np.float32)
        kept = [(pos, int(row)) for pos, row in enumerate(rows) if keep[pos]]
        crops = self._box_crops(ann, kept) if self._box_crop else None
        cam = ann.has_camera
        for pos, row in kept:
            name = str(ann.imgname[row])
            center, scale, part = ann.center[row], ann.scale[row], ann.part[row]
            cam_focal = ann.cam_focal[row] if cam else zeros2
            cam_center = ann.cam_center[row] if cam else zeros2
            if crops is None:
                with open(os.path.join(self._image_root, name), "rb") as f:
                    data = f.read()
            else:
                data = next(crops)
                moved = box_crop_annotations(center, scale, part, cam_focal, cam_center, **self._geometry())
                center, scale, part = moved["center"], moved["scale"], moved["part"]
                if cam:
                    cam_focal, cam_center = moved["cam_focal"], moved["cam_center"]
            yield (
                pos,
                {
                    "image": data,
                    "imgname": name,
                    "index": pos,
                    "center": center,
                    "scale": scale,
                    "part": part,
                    "S": ann.S[row],
                    "pose": ann.pose[row],
                    "shape": ann.shape[row],
                    "has_smpl": ann.has_smpl[row],
                    "has_joints_3d": ann.has_joints_3d[row],
                    "cam_focal": cam_focal,
                    "cam_center": cam_center,
                    "cam_t": ann.cam_t[row] if cam else zeros3,
                    "has_camera": float(cam),
                    "subject": "" if ann.subject is None else str(ann.subject[row]),
                    "action": "" if ann.action is None else str(ann.action[row]),
                },
            )

    def _geometry(self) -> dict[str, float]:
        return {"crop_px": self._box_crop["crop_px"], "crop_factor": self._box_crop["crop_factor"]}

    def _box_crops(self, ann: ann_lib.Annotations, kept: list[tuple[int, int]]):
        """Encoded box crops of the kept rows, in order (tf.data: decoded and resampled in parallel)."""
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        from hmr_jax.data import augment  # pylint: disable=g-import-not-at-top

        opts = self._box_crop
        rows = np.array([row for _, row in kept], np.int64)
        paths = [os.path.join(self._image_root, str(n)) for n in ann.imgname[rows]] if len(rows) else []

        def crop(path, center, scale):
            out = augment.box_crop(tf.io.read_file(path), center, scale, opts["crop_px"], opts["crop_factor"])
            return tf.io.encode_jpeg(out["image"], quality=opts["jpeg_quality"])

        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(paths, tf.string), ann.center[rows].astype(np.float32), ann.scale[rows].astype(np.float32))
        )
        ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(8)
        it = iter(ds)
        for pos, row in kept:
            try:
                yield next(it).numpy()
            except tf.errors.OpError as e:
                raise RuntimeError(
                    f"HmrFolder: box crop of sample #{pos} {ann.imgname[row]} failed: {e.message}"
                ) from e


def box_crop_options(
    crop_px: int | None, crop_factor: float = DEFAULT_CROP_FACTOR, jpeg_quality: int = DEFAULT_JPEG_QUALITY
) -> dict[str, Any] | None:
    """The metadata's `box_crop` entry (None: full frames), checked."""
    if crop_px is None:
        return None
    checks = [
        (
            isinstance(crop_px, (int, np.integer)) and not isinstance(crop_px, bool) and crop_px >= 16,
            "crop_px: an integer >= 16 (pixels of the stored square; e.g. 2 x img_size)",
            crop_px,
        ),
        (
            isinstance(crop_factor, (int, float)) and np.isfinite(crop_factor) and crop_factor >= 1.0,
            "crop_factor: a number >= 1 (stored side / box side; 1.8 covers SPIN's augmentation)",
            crop_factor,
        ),
        (
            isinstance(jpeg_quality, (int, np.integer)) and 1 <= jpeg_quality <= 100,
            "jpeg_quality: an integer in [1, 100]",
            jpeg_quality,
        ),
    ]
    for ok, expected, found in checks:
        if not ok:
            raise ValueError(f"HmrFolder box crop: expected {expected}, found {found!r}")
    return {"crop_px": int(crop_px), "crop_factor": float(crop_factor), "jpeg_quality": int(jpeg_quality)}


def box_crop_annotations(
    center: np.ndarray,
    scale: np.ndarray | float,
    part: np.ndarray,
    cam_focal: np.ndarray,
    cam_center: np.ndarray,
    *,
    crop_px: int,
    crop_factor: float,
) -> dict[str, np.ndarray]:
    """Annotations of a sample (or of N samples: leading dims) in its stored box crop's px: the
    crop maps source x to k (x - center) + (crop_px - 1) / 2, k = crop_px / (crop_factor * 200 *
    scale) (augment.crop_matrix with side crop_factor * 200 * scale, no rotation or flip)."""
    center = np.asarray(center, np.float64)
    scale = np.asarray(scale, np.float64)
    k = crop_px / (crop_factor * 200.0 * scale)  # stored px per source px
    o = (crop_px - 1) / 2.0
    part = np.asarray(part, np.float64)
    moved = np.concatenate([(part[..., :2] - center[..., None, :]) * k[..., None, None] + o, part[..., 2:]], axis=-1)
    f32 = np.float32
    cam_center = (np.asarray(cam_center, np.float64) - center) * k[..., None] + o
    return {
        "center": np.full(center.shape, o, f32),
        "scale": np.full(scale.shape, crop_px / (200.0 * crop_factor), f32),
        "part": moved.astype(f32),
        "cam_focal": (np.asarray(cam_focal, np.float64) * k[..., None]).astype(f32),
        "cam_center": cam_center.astype(f32),
    }


def build(
    data_dir: str,
    image_root: str,
    annotations: str | Mapping[str, str],
    *,
    val_fraction: float = 0.1,
    strict: bool = False,
    crop_px: int | None = None,
    crop_factor: float = DEFAULT_CROP_FACTOR,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> HmrFolder:
    """Build (once; a no-op when already built in data_dir) and return the builder. Offline.
    crop_px=None stores the full frames; crop_px=N stores box crops (module docstring). A data_dir
    already built in the other mode (or with other box-crop options) is an error."""
    want = box_crop_options(crop_px, crop_factor, jpeg_quality)
    builder = HmrFolder(
        data_dir=os.fspath(data_dir),
        image_root=image_root,
        annotations=annotations,
        val_fraction=val_fraction,
        strict=strict,
        crop_px=crop_px,
        crop_factor=crop_factor,
        jpeg_quality=jpeg_quality,
    )
    if builder.is_prepared():
        found = builder.info.metadata.get("box_crop")
        if found != want:
            raise ValueError(
                f"TFDS dataset in {data_dir!r}: expected records with box_crop={want} "
                f"(None = full frames), found box_crop={found}; build into another data "
                "dir (or delete this one)"
            )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def load_builder(data_dir: str) -> HmrFolder:
    """The builder of an already-built dataset in data_dir (to call as_dataset / read metadata)."""
    builder = HmrFolder(data_dir=os.fspath(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset: expected a built {NAME!r} under {data_dir!r}, found "
            f"none; build it with tfds_builder.build(...)"
        )
    return builder


def main(argv=None) -> None:
    """`python -m hmr_jax.data.tfds_builder --data-dir OUT --image-root DIR --annotations A.npz`."""
    import argparse  # pylint: disable=g-import-not-at-top

    ap = argparse.ArgumentParser(description="Build TFDS records from an image folder + SPIN-layout npz.")
    ap.add_argument("--data-dir", required=True, help="where the TFDS records go")
    ap.add_argument("--image-root", required=True, help="folder the annotations' imgname are relative to")
    ap.add_argument(
        "--annotations",
        required=True,
        nargs="+",
        help="one npz (split by subject / val fraction) or train=A.npz validation=B.npz",
    )
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--strict", action="store_true", help="stop at the first unusable sample")
    ap.add_argument(
        "--crop-px",
        type=int,
        default=None,
        help="store box crops of N x N px instead of the full frames (faster to read; "
        "use 2 x the training img_size, e.g. 448 for 224); default: full frames",
    )
    ap.add_argument(
        "--crop-factor",
        type=float,
        default=DEFAULT_CROP_FACTOR,
        help="side of the stored square / box side (default %(default)s: covers "
        "augmentation scale up to 1.25 at any rotation)",
    )
    ap.add_argument(
        "--jpeg-quality",
        type=int,
        default=DEFAULT_JPEG_QUALITY,
        help="JPEG quality of the stored crops (default %(default)s)",
    )
    args = ap.parse_args(argv)
    ann = (
        args.annotations[0]
        if len(args.annotations) == 1 and "=" not in args.annotations[0]
        else dict(a.split("=", 1) for a in args.annotations)
    )
    try:
        box_crop_options(args.crop_px, args.crop_factor, args.jpeg_quality)
    except ValueError as e:
        ap.error(str(e))
    builder = build(
        args.data_dir,
        args.image_root,
        ann,
        val_fraction=args.val_fraction,
        strict=args.strict,
        crop_px=args.crop_px,
        crop_factor=args.crop_factor,
        jpeg_quality=args.jpeg_quality,
    )
    for split, info in builder.info.splits.items():
        print(f"{split}: {info.num_examples} examples")
    mode = builder.info.metadata.get("box_crop")
    print(f"built {NAME!r} in {args.data_dir} ({'full frames' if mode is None else 'box crops: ' + str(mode)})")


if __name__ == "__main__":
    main()

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
"""

import os
import warnings
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hmr_jax.data import annotations as ann_lib

NAME = 'hmr_folder'


def _features() -> tfds.features.FeaturesDict:
  f32 = np.float32
  T = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      'image': T(shape=(), dtype=np.object_),  # encoded bytes, as on disk
      'imgname': tfds.features.Text(),
      'index': T(shape=(), dtype=np.int64),
      'center': T(shape=(2,), dtype=f32),
      'scale': T(shape=(), dtype=f32),
      'part': T(shape=(ann_lib.NUM_JOINTS, 3), dtype=f32),
      'S': T(shape=(ann_lib.NUM_JOINTS, 4), dtype=f32),
      'pose': T(shape=(72,), dtype=f32),
      'shape': T(shape=(10,), dtype=f32),
      'has_smpl': T(shape=(), dtype=f32),
      'has_joints_3d': T(shape=(), dtype=f32),
      'cam_focal': T(shape=(2,), dtype=f32),
      'cam_center': T(shape=(2,), dtype=f32),
      'cam_t': T(shape=(3,), dtype=f32),
      'has_camera': T(shape=(), dtype=f32),
      'subject': tfds.features.Text(),
      'action': tfds.features.Text(),
  })


def check_image(path: str) -> tuple[tuple[int, int] | None, str | None]:
  """((height, width), None) if the image decodes, else (None, reason). Reads every byte of the
  entropy-coded stream but decodes JPEGs at 1/8 scale (PIL draft), so it is cheap."""
  if not os.path.isfile(path):
    return None, f'missing image {path}'
  try:
    with Image.open(path) as im:
      w, h = im.size
      im.draft('RGB', (max(1, w // 8), max(1, h // 8)))
      im.load()
    return (h, w), None
  except Exception as e:  # PIL raises many types for corrupt files
    return None, f'corrupt image {path}: {type(e).__name__}: {e}'


class HmrFolder(tfds.core.GeneratorBasedBuilder):
  """Images + annotation npz -> TFDS. Constructor args name the folder (only to build)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def __init__(self, *, image_root: str | None = None,
               annotations: str | Mapping[str, str] | None = None, val_fraction: float = 0.1,
               strict: bool = False, **kwargs):
    self._image_root = None if image_root is None else os.fspath(image_root)
    self._annotations = annotations
    self._val_fraction = val_fraction
    self._strict = strict
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description='HMR training data: images + SPIN-layout annotations.',
        features=_features(), disable_shuffling=True, metadata=tfds.core.MetadataDict())

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
      raise ValueError('HmrFolder: building needs image_root and annotations (constructor args); '
                       'found None. To read an existing dataset use load_builder(data_dir).')
    gens = {}
    joint_sets = set()
    for split in ('train', 'validation'):
      ann, rows = self._load_split(split)
      if ann is None:
        continue
      joint_sets.add(ann.joint_set)
      keep, bad = self._scan(ann, rows, split)
      self.info.metadata[f'indices_{split}'] = [int(i) for i in range(len(rows)) if keep[i]]
      ranks = ann_lib.resample_rank(ann.select(rows))  # frame order within sequences, else position
      self.info.metadata[f'resample_rank_{split}'] = [int(r) for r in ranks[keep]]
      self.info.metadata[f'skipped_{split}'] = len(bad)
      gens[split] = self._generate_examples(ann, rows, keep)
    if len(joint_sets) != 1:
      raise ValueError(f'HmrFolder: expected one joint set across splits, found {sorted(joint_sets)}')
    self.info.metadata['joint_set'] = joint_sets.pop()
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
      msg = '; '.join(f'#{i} {sub.imgname[i]}: {r}' for i, r in list(sorted(bad.items()))[:10])
      if self._strict:
        raise ValueError(f'HmrFolder ({split}): {len(bad)} unusable sample(s): {msg}')
      warnings.warn(f'HmrFolder ({split}): skipping {len(bad)} unusable sample(s): {msg}')
    return np.array([i not in bad for i in range(len(rows))]), bad

  def _generate_examples(self, ann: ann_lib.Annotations, rows: np.ndarray, keep: np.ndarray):
    zeros2, zeros3 = np.zeros(2, np.float32), np.zeros(3, np.float32)
    for pos, row in enumerate(rows):
      if not keep[pos]:
        continue
      name = str(ann.imgname[row])
      with open(os.path.join(self._image_root, name), 'rb') as f:
        data = f.read()
      cam = ann.has_camera
      yield pos, {
          'image': data, 'imgname': name, 'index': pos,
          'center': ann.center[row], 'scale': ann.scale[row], 'part': ann.part[row],
          'S': ann.S[row], 'pose': ann.pose[row], 'shape': ann.shape[row],
          'has_smpl': ann.has_smpl[row], 'has_joints_3d': ann.has_joints_3d[row],
          'cam_focal': ann.cam_focal[row] if cam else zeros2,
          'cam_center': ann.cam_center[row] if cam else zeros2,
          'cam_t': ann.cam_t[row] if cam else zeros3, 'has_camera': float(cam),
          'subject': '' if ann.subject is None else str(ann.subject[row]),
          'action': '' if ann.action is None else str(ann.action[row]),
      }


def build(data_dir: str, image_root: str, annotations: str | Mapping[str, str], *,
          val_fraction: float = 0.1, strict: bool = False) -> HmrFolder:
  """Build (once; a no-op when already built in data_dir) and return the builder. Offline."""
  builder = HmrFolder(data_dir=os.fspath(data_dir), image_root=image_root, annotations=annotations,
                      val_fraction=val_fraction, strict=strict)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def load_builder(data_dir: str) -> HmrFolder:
  """The builder of an already-built dataset in data_dir (to call as_dataset / read metadata)."""
  builder = HmrFolder(data_dir=os.fspath(data_dir))
  if not builder.is_prepared():
    raise FileNotFoundError(f'TFDS dataset: expected a built {NAME!r} under {data_dir!r}, found '
                            f'none; build it with tfds_builder.build(...)')
  return builder


def main(argv=None) -> None:
  """`python -m hmr_jax.data.tfds_builder --data-dir OUT --image-root DIR --annotations A.npz`."""
  import argparse  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(description='Build TFDS records from an image folder + SPIN-layout npz.')
  ap.add_argument('--data-dir', required=True, help='where the TFDS records go')
  ap.add_argument('--image-root', required=True, help='folder the annotations\' imgname are relative to')
  ap.add_argument('--annotations', required=True, nargs='+',
                  help='one npz (split by subject / val fraction) or train=A.npz validation=B.npz')
  ap.add_argument('--val-fraction', type=float, default=0.1)
  ap.add_argument('--strict', action='store_true', help='stop at the first unusable sample')
  args = ap.parse_args(argv)
  ann = (args.annotations[0] if len(args.annotations) == 1 and '=' not in args.annotations[0]
         else dict(a.split('=', 1) for a in args.annotations))
  builder = build(args.data_dir, args.image_root, ann, val_fraction=args.val_fraction, strict=args.strict)
  for split, info in builder.info.splits.items():
    print(f'{split}: {info.num_examples} examples')
  print(f'built {NAME!r} in {args.data_dir}')


if __name__ == '__main__':
  main()

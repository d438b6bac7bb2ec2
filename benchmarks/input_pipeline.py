"""Input pipeline throughput: JPEG on disk -> decode, crop, augment, normalise, batch.

    python benchmarks/input_pipeline.py --threads=1     # images/s on one core
    python benchmarks/input_pipeline.py --threads=0     # all cores (tf.data default)
    python benchmarks/input_pipeline.py --threads=1 --ab --baseline   # + full-resolution decode

Writes --num_images JPEGs of --image_px x --image_px (smooth content + noise, like photos) with
person boxes of 40-70 % of the image side into a temp dir, then times the training pipeline
(`hmr_jax.data.pipeline.make_dataset`, augmentation on) at --img_size px after one warm-up pass.
`--ab` also times the same pipeline with JPEG DCT-domain downscaling off (max_decode_ratio=1, the
previous path), alternating passes of the two so that both see the same machine load.
The number to compare is images per CPU-second (process CPU time, all threads): it does not
depend on other jobs sharing the cores, unlike wall-clock images/s.
Reference: a SPIN-style OpenCV loader does about 136 images/s on one core here (STACK_NOTES).
"""

import argparse
import os
import tempfile
import time

import numpy as np


def write_dataset(root: str, n: int, px: int, seed: int = 0, noise: float = 6.0) -> str:
  from PIL import Image

  from hmr_jax.data import annotations as ann_lib
  rng = np.random.default_rng(seed)
  img_dir = os.path.join(root, 'images')
  os.makedirs(img_dir, exist_ok=True)
  yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
  names, centers, scales, parts = [], [], [], []
  for i in range(n):
    f = rng.uniform(1, 6, 3)
    base = np.stack([np.sin(f[0] * xx * 6 + i), np.cos(f[1] * yy * 6), np.sin(f[2] * (xx + yy) * 4)],
                    -1) * 90 + 128
    img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
    name = f'S1_Walking.54138969_{i:06d}.jpg'
    Image.fromarray(img).save(os.path.join(img_dir, name), 'JPEG', quality=90)
    side = rng.uniform(0.4, 0.7) * px
    c = rng.uniform(side / 2, px - side / 2, 2)
    names.append(name)
    centers.append(c)
    scales.append(side / 200)
    kp = c + rng.uniform(-side / 2.4, side / 2.4, (24, 2))
    parts.append(np.concatenate([kp, np.ones((24, 1))], -1))
  path = os.path.join(root, 'ann.npz')
  ann_lib.save_spin(path, {
      'imgname': np.array(names), 'center': np.array(centers, np.float32),
      'scale': np.array(scales, np.float32), 'part': np.array(parts, np.float32),
      'S': rng.normal(0, 0.3, (n, 24, 4)).astype(np.float32),
      'pose': rng.normal(0, 0.3, (n, 72)).astype(np.float32),
      'shape': np.zeros((n, 10), np.float32), 'has_smpl': np.ones(n, np.float32),
      'joint_set': np.array('spin24')})
  return path


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--threads', type=int, default=1, help='tf.data threads; 0 = all cores')
  ap.add_argument('--num_images', type=int, default=200)
  ap.add_argument('--image_px', type=int, default=1000)
  ap.add_argument('--img_size', type=int, default=224)
  ap.add_argument('--batch_size', type=int, default=32)
  ap.add_argument('--passes', type=int, default=3)
  ap.add_argument('--noise', type=float, default=6.0,
                  help='pixel noise std of the test JPEGs (sets their size / entropy)')
  ap.add_argument('--baseline', action='store_true',
                  help='also time a one-thread PIL loader (decode, affine warp, normalise)')
  ap.add_argument('--max_decode_ratio', type=int, default=8,
                  help='JPEG DCT-domain downscaling limit (1 = full-resolution decode)')
  ap.add_argument('--ab', action='store_true',
                  help='also time max_decode_ratio=1 (full-resolution decode), passes alternated')
  args = ap.parse_args()

  import tensorflow as tf
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from hmr_jax.data import pipeline

  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.time()
    path = write_dataset(tmp, args.num_images, args.image_px, noise=args.noise)
    mb = sum(os.path.getsize(os.path.join(tmp, 'images', f))
             for f in os.listdir(os.path.join(tmp, 'images'))) / 2**20
    print(f'wrote {args.num_images} JPEGs of {args.image_px}x{args.image_px} '
          f'({mb / args.num_images * 1024:.0f} KiB each) in {time.time() - t0:.1f}s')
    src = pipeline.FolderSource(path, os.path.join(tmp, 'images'))
    ratios = [args.max_decode_ratio] + ([1] if args.ab and args.max_decode_ratio != 1 else [])
    datasets = {r: pipeline.make_dataset(
        src, batch_size=args.batch_size, train=True, seed=0,
        augment={'img_size': args.img_size, 'max_decode_ratio': r}, threads=args.threads or None,
        num_parallel_calls=args.threads or tf.data.AUTOTUNE) for r in ratios}
    for ds in datasets.values():  # warm-up pass (tracing, file cache)
      for _ in ds:
        pass
    load0 = os.getloadavg()[0]
    stats = {r: [0, 0.0, 0.0] for r in ratios}  # images, wall s, CPU s
    for _ in range(args.passes):
      for r, ds in datasets.items():  # alternate: both variants see the same load
        t0, c0 = time.perf_counter(), time.process_time()
        for b in ds:
          stats[r][0] += int(b['image'].shape[0])
        stats[r][1] += time.perf_counter() - t0
        stats[r][2] += time.process_time() - c0
    if args.baseline:
      base_cpu = pil_baseline(path, os.path.join(tmp, 'images'), args.img_size)
  cores = args.threads or os.cpu_count()
  print(f'img_size {args.img_size}, batch {args.batch_size}, augmentation on, {cores} thread(s); '
        f'load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
  for r, (n, dt, cpu) in stats.items():
    label = 'DCT-scaled decode (max ratio %d)' % r if r > 1 else 'full-resolution decode'
    print(f'{label}: {n} images, {dt:.2f}s wall = {n / dt / cores:.1f} images/s per core '
          f'(wall; lower when other jobs share the cores); CPU {cpu:.2f}s = '
          f'{n / cpu:.1f} images per CPU-second (load-independent)')
  if len(stats) == 2:
    (n1, _, c1), (n2, _, c2) = stats.values()
    print(f'speed-up (images per CPU-second): {(n1 / c1) / (n2 / c2):.2f}x')
  if args.baseline:
    print(f'baseline (PIL, one thread, same files): {1 / base_cpu:.1f} images per CPU-second')


def pil_baseline(path: str, image_root: str, img_size: int) -> float:
  """CPU seconds per image of a plain one-thread PIL loader (SPIN-like: full decode, one affine
  warp with rotation, channel noise, normalisation)."""
  from PIL import Image

  from hmr_jax.data import annotations as ann_lib
  ann = ann_lib.load(path)
  rng = np.random.default_rng(0)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  c0 = time.process_time()
  for name, c, sc in zip(ann.imgname, ann.center, ann.scale):
    im = Image.open(os.path.join(image_root, name)).convert('RGB')
    th, f = rng.normal() * 0.5, img_size / (200 * sc)
    ct, st = np.cos(th), np.sin(th)
    # inverse map crop px -> source px
    o = (img_size - 1) / 2
    a, b = ct / f, st / f
    coeffs = (a, b, c[0] - a * o - b * o, -b, a, c[1] + b * o - a * o)
    out = np.asarray(im.transform((img_size, img_size), Image.AFFINE, coeffs, Image.BILINEAR),
                     np.float32)
    out = ((np.clip(out * rng.uniform(0.6, 1.4, 3), 0, 255) / 255) - mean) / std
  return (time.process_time() - c0) / len(ann)


if __name__ == '__main__':
  main()

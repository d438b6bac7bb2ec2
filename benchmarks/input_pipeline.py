"""Input pipeline throughput, images per CPU-second on one core, and the quickstart's consumption.

    python benchmarks/input_pipeline.py                   # the table below, threads=1 (per core)
    python benchmarks/input_pipeline.py --no_quickstart   # only the 224 px pipelines
    python benchmarks/input_pipeline.py --baseline        # + a one-thread PIL loader

Timed side by side, round-robin (one pass of each per round, so all see the same machine load):
  (a) folder:      JPEG frames on disk (--image_px square, smooth content + noise like photos,
                   person boxes of 40-70 % of the side, H36M-like) -> read, decode (DCT-scaled
                   where the box allows), crop, augment (SPIN's ranges), normalise, batch at
                   --img_size (`pipeline.make_dataset`, FolderSource).
  (b) TFDS crops:  the same samples built into TFDS records holding box crops
                   (`tfds_builder.build(crop_px=2 x img_size)`) -> the same pipeline (TfdsSource).
  (c) quickstart:  the quickstart's own input, as configs/quickstart.py sets it (data.img_size,
                   batch, augmentation, synthetic options): JPEGs from hmr_jax.data.synthetic
                   at data.synthetic.render_size -> img_size crops, read from the files, and
                   (c') the same with its decoded-image cache (data.cache_decoded_mb).
  step:            the quickstart's real training step (`steps.make_train_step`, jit, state
                   donated; the config's model and batch) on a batch of (c).
The pipelines run on one tf.data thread (--threads=1); the step uses every core (XLA).
Throughput is images per CPU-second (process CPU time, all threads): far less sensitive to other
jobs sharing the cores than wall-clock images/s (also printed), though on a shared machine with
SMT it still moved by +-20 % between runs here: compare variants within one run (the one-thread
PIL loader, --baseline, shows the machine's speed of the moment). The step's consumption is
given two ways: images/s wall-clock (lower when the machine is shared) and images per
CPU-second x cores (what it could reach with every core to itself and perfect scaling: an upper
bound, so the ratio "(c) per core / consumption" computed from it is the conservative one).
Also printed: how close the box-crop records' crops are to the folder's (same samples, same
augmentation parameters), in grey levels.
"""

import argparse
import functools
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_dataset(root: str, n: int, px: int, seed: int = 0, noise: float = 6.0) -> str:
    from PIL import Image

    from hmr_jax.data import annotations as ann_lib

    rng = np.random.default_rng(seed)
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir, exist_ok=True)
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
    names, centers, scales, parts = [], [], [], []
    for i in range(n):
        f = rng.uniform(1, 6, 3)
        base = np.stack([np.sin(f[0] * xx * 6 + i), np.cos(f[1] * yy * 6), np.sin(f[2] * (xx + yy) * 4)], -1) * 90 + 128
        img = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
        name = f"S1_Walking.54138969_{i:06d}.jpg"
        Image.fromarray(img).save(os.path.join(img_dir, name), "JPEG", quality=90)
        side = rng.uniform(0.4, 0.7) * px
        c = rng.uniform(side / 2, px - side / 2, 2)
        names.append(name)
        centers.append(c)
        scales.append(side / 200)
        kp = c + rng.uniform(-side / 2.4, side / 2.4, (24, 2))
        parts.append(np.concatenate([kp, np.ones((24, 1))], -1))
    path = os.path.join(root, "ann.npz")
    ann_lib.save_spin(
        path,
        {
            "imgname": np.array(names),
            "center": np.array(centers, np.float32),
            "scale": np.array(scales, np.float32),
            "part": np.array(parts, np.float32),
            "S": rng.normal(0, 0.3, (n, 24, 4)).astype(np.float32),
            "pose": rng.normal(0, 0.3, (n, 72)).astype(np.float32),
            "shape": np.zeros((n, 10), np.float32),
            "has_smpl": np.ones(n, np.float32),
            "joint_set": np.array("spin24"),
        },
    )
    return path


class Timed:
    """Round-robin timing of one variant: images, wall seconds, CPU seconds over its passes."""

    def __init__(self, name, run):
        self.name, self.run = name, run
        self.images, self.wall, self.cpu = 0, 0.0, 0.0

    def once(self):
        t0, c0 = time.perf_counter(), time.process_time()
        n = self.run()
        self.wall += time.perf_counter() - t0
        self.cpu += time.process_time() - c0
        self.images += n

    def row(self):
        return (
            f"{self.name:<58} {self.images:>7} {self.cpu:>7.2f} {self.images / self.cpu:>12.1f} "
            f"{self.wall:>7.2f} {self.images / self.wall:>10.1f}"
        )


def count(ds) -> int:
    n = 0
    for b in ds:
        n += int(b["index"].shape[0])
    return n


def quickstart_step(batch: dict):
    """The quickstart's jitted train step on `batch`: returns (run k steps -> images, batch size)."""
    import jax  # pylint: disable=g-import-not-at-top

    from hmr_jax import body_model, config_files, smpl, steps
    from hmr_jax import state as state_lib

    config = config_files.load(REPO / "configs" / "quickstart.py")
    models = state_lib.make_static_parts(config)
    step = jax.jit(steps.make_train_step(config, models, "smpl24"), donate_argnums=(0,))
    state = jax.jit(functools.partial(state_lib.init_state, config, models))(jax.random.PRNGKey(0))
    smpl_model = jax.device_put(smpl.load(config.body_model_path or str(body_model.default_body_model_path())))
    arrays = jax.device_put({k: np.asarray(v, np.float32) for k, v in batch.items() if k != "index"})
    box = {"state": state}
    t0 = time.perf_counter()
    box["state"], m = step(box["state"], arrays, smpl_model)
    jax.block_until_ready(m)
    print(
        f"quickstart step compiled + first step: {time.perf_counter() - t0:.1f}s wall "
        f"(jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s))"
    )

    def run(k):
        for _ in range(k):
            box["state"], metrics = step(box["state"], arrays, smpl_model)
        jax.block_until_ready((box["state"], metrics))
        return k * len(batch["index"])

    return run, config


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="tf.data threads; 0 = all cores")
    ap.add_argument("--num_images", type=int, default=200)
    ap.add_argument("--image_px", type=int, default=1000)
    ap.add_argument("--img_size", type=int, default=224)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--crop_px", type=int, default=0, help="box crop px of the TFDS records (default 2 x img_size)")
    ap.add_argument("--jpeg_quality", type=int, default=95)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument(
        "--noise", type=float, default=6.0, help="pixel noise std of the test JPEGs (sets their size / entropy)"
    )
    ap.add_argument(
        "--no_quickstart",
        action="store_true",
        help="skip the quickstart part (synthetic 64 px pipeline and training step)",
    )
    ap.add_argument("--quickstart_images", type=int, default=320)
    ap.add_argument("--quickstart_steps", type=int, default=3, help="train steps per round")
    ap.add_argument(
        "--baseline", action="store_true", help="also time a one-thread PIL loader (decode, affine warp, normalise)"
    )
    args = ap.parse_args()
    crop_px = args.crop_px or 2 * args.img_size

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from hmr_jax.data import pipeline, tfds_builder

    def make(src, img_size, augment=None):
        return pipeline.make_dataset(
            src,
            batch_size=args.batch_size,
            train=True,
            seed=0,
            augment={**(augment or {}), "img_size": img_size},
            threads=args.threads or None,
            num_parallel_calls=args.threads or tf.data.AUTOTUNE,
        )

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        path = write_dataset(tmp, args.num_images, args.image_px, noise=args.noise)
        images = os.path.join(tmp, "images")
        kib = sum(os.path.getsize(os.path.join(images, f)) for f in os.listdir(images)) / 1024
        print(
            f"wrote {args.num_images} JPEGs of {args.image_px}x{args.image_px} "
            f"({kib / args.num_images:.0f} KiB each) in {time.time() - t0:.1f}s"
        )
        t0 = time.time()
        tfds_dir = os.path.join(tmp, "tfds")
        tfds_builder.build(tfds_dir, images, path, crop_px=crop_px, jpeg_quality=args.jpeg_quality)
        rec = [os.path.join(dp, f) for dp, _, fs in os.walk(tfds_dir) for f in fs if ".tfrecord" in f]
        kib = sum(os.path.getsize(f) for f in rec) / 1024
        print(
            f"built TFDS box crops ({crop_px} px, quality {args.jpeg_quality}; "
            f"{kib / args.num_images:.0f} KiB per record) in {time.time() - t0:.1f}s"
        )
        folder = make(pipeline.FolderSource(path, images), args.img_size)
        crops = make(pipeline.TfdsSource(tfds_dir, "train"), args.img_size)
        variants = [
            Timed(f"(a) folder: {args.image_px} px JPEG frames -> {args.img_size} px", lambda: count(folder)),
            Timed(f"(b) TFDS box crops: {crop_px} px JPEG -> {args.img_size} px", lambda: count(crops)),
        ]
        if not args.no_quickstart:
            from hmr_jax import config_files  # pylint: disable=g-import-not-at-top
            from hmr_jax.data import synthetic  # pylint: disable=g-import-not-at-top

            qc = config_files.load(REPO / "configs" / "quickstart.py")
            t0 = time.time()
            syn = os.path.join(tmp, "synthetic")
            n_syn = int(round(args.quickstart_images / (1 - qc.data.val_fraction)))
            options = {
                k: qc.data.synthetic[k] for k in ("yaw_range_deg", "frames_per_sequence") if k in qc.data.synthetic
            }
            render_px = qc.data.synthetic.get("render_size", 0) or qc.data.img_size
            synthetic.generate(
                syn,
                n_syn,
                0,
                render_px,
                val_fraction=qc.data.val_fraction,
                progress=False,
                write_preview=False,
                **options,
            )
            print(f"generated {n_syn} synthetic {render_px} px samples in {time.time() - t0:.1f}s")
            qsrc = pipeline.FolderSource(
                os.path.join(syn, qc.data.annotations), syn, split="train", val_fraction=qc.data.val_fraction
            )

            def quick_input(cache_mb):
                return pipeline.make_dataset(
                    qsrc,
                    batch_size=qc.data.batch_size,
                    train=True,
                    seed=0,
                    augment={**qc.data.augment, "img_size": qc.data.img_size},
                    threads=args.threads or None,
                    num_parallel_calls=args.threads or tf.data.AUTOTUNE,
                    cache_mb=cache_mb,
                )

            quick = quick_input(0.0)
            t0 = time.perf_counter()
            quick_cached = quick_input(qc.data.cache_decoded_mb)
            print(
                f"decoded-image cache of {n_syn - round(n_syn * qc.data.val_fraction)} training images: "
                f"{time.perf_counter() - t0:.2f}s"
            )
            variants.append(
                Timed(
                    f"(c) quickstart input: {render_px} px synthetic JPEG -> {qc.data.img_size} px",
                    lambda: count(quick),
                )
            )
            variants.append(Timed("(c') the same from the decoded-image cache", lambda: count(quick_cached)))
            batch = {k: v.numpy() for k, v in next(iter(quick)).items()}
            step_run, _ = quickstart_step(batch)
            k = args.quickstart_steps
            step = Timed(
                f"quickstart train step (batch {qc.data.batch_size}, {qc.data.img_size} px), {k} per round",
                lambda: step_run(k),
            )
        # warm-up (tracing, XLA compilation, file cache), and the box crops' agreement with the folder
        outs = [{int(i): img for b in ds for i, img in zip(b["index"], b["image"])} for ds in (folder, crops)]
        if not args.no_quickstart:
            count(quick)
            count(quick_cached)
            step_run(1)
        load0 = os.getloadavg()
        for _ in range(args.passes):
            for v in variants:
                v.once()
            if not args.no_quickstart:
                step.once()
        load1 = os.getloadavg()
        if args.baseline:
            base_cpu = pil_baseline(path, images, args.img_size)

    cores = os.cpu_count()
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {cores} cores; load average "
        f"(1 min) {load0[0]:.1f} -> {load1[0]:.1f}; tf.data threads {args.threads or 'all'}; "
        f"augmentation on; batch {args.batch_size}; {args.passes} rounds"
    )
    print(f"{'variant':<58} {'images':>7} {'CPU s':>7} {'img/CPU-s':>12} {'wall s':>7} {'img/s wall':>10}")
    for v in variants:
        print(v.row())
    if args.baseline:
        print(
            f"{'    one-thread PIL loader, frames of (a) (decode, warp, normalise)':<58} "
            f"{'':>7} {'':>7} {1 / base_cpu:>12.1f}"
        )
    a, b = variants[0], variants[1]
    ra, rb = a.images / a.cpu, b.images / b.cpu
    print(
        f"\n(b) / (a): {rb / ra:.2f}x images per CPU-second; target >= 200 per core at "
        f"{args.img_size} px: (a) {'met' if ra >= 200 else 'NOT met'}, (b) "
        f"{'met' if rb >= 200 else 'NOT met'}"
    )
    diffs = [np.abs(_grey(outs[0][i]) - _grey(outs[1][i])) for i in outs[0] if i in outs[1]]
    d = np.stack(diffs)
    print(
        f"box crops vs folder, same samples and augmentation: mean |diff| {d.mean():.2f} grey "
        f"levels (of 255), 99th percentile {np.percentile(d, 99):.1f} ({len(diffs)} crops)"
    )
    if not args.no_quickstart:
        c = variants[2]
        print(step.row())
        per_core = c.images / c.cpu
        wall = step.images / step.wall
        best = step.images / step.cpu * cores
        print(
            f"\nquickstart: the step consumes {wall:.1f} images/s wall-clock here ({cores} cores, "
            f"shared), at most {best:.1f} images/s with all {cores} cores to itself "
            f"({step.images / step.cpu:.1f} images per CPU-s x {cores});\n  the input pipeline "
            f"makes {per_core:.1f} images per CPU-second on one core: {per_core / best:.1f}x the "
            f"most the step can consume ({per_core / wall:.1f}x its wall-clock rate here); target "
            f">= 3x: {'met' if per_core / best >= 3 else 'NOT met'}"
        )
        cc = variants[3]
        print(
            f"  (c') with the decoded-image cache: {cc.images / cc.cpu:.1f} images per CPU-second, "
            f"{cc.images / cc.cpu / per_core:.2f}x (c)"
        )


def _grey(image):
    from hmr_jax.data import augment  # pylint: disable=g-import-not-at-top

    std, mean = np.array(augment.IMAGENET_STD), np.array(augment.IMAGENET_MEAN)
    return (np.asarray(image) * std + mean) * 255


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
        im = Image.open(os.path.join(image_root, name)).convert("RGB")
        th, f = rng.normal() * 0.5, img_size / (200 * sc)
        ct, st = np.cos(th), np.sin(th)
        # inverse map crop px -> source px
        o = (img_size - 1) / 2
        a, b = ct / f, st / f
        coeffs = (a, b, c[0] - a * o - b * o, -b, a, c[1] + b * o - a * o)
        out = np.asarray(im.transform((img_size, img_size), Image.AFFINE, coeffs, Image.BILINEAR), np.float32)
        out = ((np.clip(out * rng.uniform(0.6, 1.4, 3), 0, 255) / 255) - mean) / std
    return (time.process_time() - c0) / len(ann)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

"""The data set writer: renders samples in worker processes and writes the files.

Workers are separate processes ('spawn'; safe under a parent that already runs jax); they use only
numpy (`body.forward`) and the software rasteriser `hmr_jax.render`. Files and fields: the
`hmr_jax.data.synthetic` docstring.
"""

import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np
from jaxtyping import UInt8

from hmr_jax import render, skeleton
from hmr_jax.data.synthetic import body as body_lib
from hmr_jax.data.synthetic import samples

GENERATOR_VERSION = "synth-2"

# One process per core: single-threaded BLAS / OpenMP in the workers.
_SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "JAX_PLATFORMS": "cpu",
}
_WORKER = {}  # per worker process: body model and job constants (set once by _init_worker)


def _init_worker(body: body_lib.Body, out_dir: str, seed: int, img_size: int, layout: samples.Layout):
    _WORKER.update(body=body, out_dir=out_dir, seed=seed, img_size=img_size, layout=layout)


def _work(indices) -> list[dict]:
    w = _WORKER
    cache = {}
    return [
        samples.render_sample(w["body"], w["out_dir"], w["seed"], w["img_size"], w["layout"], i, cache) for i in indices
    ]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stack(rows: list[dict], with_subject: bool) -> dict:
    out = {
        "imgname": np.array([r["imgname"] for r in rows]),
        "center": np.stack([r["center"] for r in rows]).astype(np.float32),
        "scale": np.array([r["scale"] for r in rows], np.float32),
        "part": np.stack([r["part"] for r in rows]).astype(np.float32),
        "S": np.stack([r["S"] for r in rows]).astype(np.float32),
        "pose": np.stack([r["pose"] for r in rows]).astype(np.float32),
        "shape": np.stack([r["shape"] for r in rows]).astype(np.float32),
        "has_smpl": np.ones(len(rows), np.float32),
        "joint_set": "smpl24",
        "cam_focal": np.stack([r["cam_focal"] for r in rows]).astype(np.float32),
        "cam_center": np.stack([r["cam_center"] for r in rows]).astype(np.float32),
        "cam_t": np.stack([r["cam_t"] for r in rows]).astype(np.float32),
        "action": np.array([r["action"] for r in rows]),
        "sequence": np.array([r["sequence"] for r in rows], np.int64),
        "frame": np.array([r["frame"] for r in rows], np.int64),
    }
    if with_subject:
        out["subject"] = np.array([r["subject"] for r in rows])
    return out


def _save(path: str, rows: list[dict], with_subject: bool) -> None:
    """annotations.save_spin (with `sequence` and `frame`); atomic."""
    from hmr_jax.data import annotations as ann_lib

    tmp = path + ".tmp.npz"
    ann_lib.save_spin(tmp, _stack(rows, with_subject))
    os.replace(tmp, path)


def preview(out_dir, ann_path=None, num: int = 16, cols: int = 4) -> UInt8[np.ndarray, "h w 3"]:
    """Contact sheet of `num` samples spread over the set (read back from the JPEGs), with the
    box (yellow), 2D joints (red) and skeleton (green) drawn."""
    from PIL import Image

    from hmr_jax.data import annotations as ann_lib

    ann = ann_lib.load(ann_path or os.path.join(out_dir, "annotations.npz"))
    idx = np.unique(np.linspace(0, len(ann) - 1, min(num, len(ann))).round().astype(int))
    tiles = []
    for i in idx:
        img = np.asarray(Image.open(os.path.join(out_dir, ann.imgname[i])).convert("RGB"))
        scale = max(1, 192 // img.shape[0])
        if scale > 1:
            img = np.repeat(np.repeat(img, scale, 0), scale, 1)
        c, half = ann.center[i] * scale, 100.0 * ann.scale[i] * scale
        kp = ann.part[i].copy()
        kp[:, :2] = (kp[:, :2] + 0.5) * scale - 0.5
        c = (ann.center[i] + 0.5) * scale - 0.5
        img = render.draw_box(img, c[0] - half, c[1] - half, c[0] + half, c[1] + half)
        img = render.draw_keypoints(img, kp, parents=skeleton.SMPL24_PARENTS, radius=max(1, img.shape[0] // 110))
        tiles.append(img)
    return render.contact_sheet(tiles, cols=cols)


def generate(
    out_dir,
    num: int,
    seed: int,
    img_size: int = 256,
    body_model_path=None,
    workers: int | None = None,
    val_fraction: float = 0.1,
    *,
    frames_per_sequence: int = samples.FRAMES_PER_SEQUENCE,
    sequences_per_subject: int = samples.SEQUENCES_PER_SUBJECT,
    yaw_range_deg: float = samples.YAW_RANGE_DEG,
    progress: bool = True,
    write_preview: bool = True,
) -> dict:
    """Render `num` samples into `out_dir` (layout: the `hmr_jax.data.synthetic` docstring); returns the summary (meta.json).

    workers: processes (default os.cpu_count(); 1 = in this process). The validation split is
    the last round(num * val_fraction) samples, made of subjects that do not occur in train.
    yaw_range_deg: each sequence starts at a yaw (turn about the vertical; 0 = facing the camera)
    uniform in +-yaw_range_deg (default 180: all directions); the body still turns up to
    +-0.5 rad more within the sequence.
    """
    num, seed, img_size = int(num), int(seed), int(img_size)
    if num < 1:
        raise ValueError(f"num: expected at least 1 sample, found {num}")
    if img_size < 16:
        raise ValueError(f"img_size: expected at least 16 px, found {img_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected in [0, 1), found {val_fraction}")
    if frames_per_sequence < 1 or sequences_per_subject < 1:
        raise ValueError(
            f"frames_per_sequence / sequences_per_subject: expected >= 1, found "
            f"{frames_per_sequence} / {sequences_per_subject}"
        )
    yaw_range_deg = float(yaw_range_deg)
    if not 0.0 <= yaw_range_deg <= 180.0:
        raise ValueError(f"yaw_range_deg: expected in [0, 180], found {yaw_range_deg}")
    workers = int(workers or os.cpu_count() or 1)
    t0 = time.time()
    body, model_path = body_lib.load(body_model_path)
    n_val = int(round(num * val_fraction))
    if num - n_val < 1:
        raise ValueError(
            f"num={num}, val_fraction={val_fraction}: expected at least one training sample, found {num - n_val}"
        )
    layout = samples.Layout(num, num - n_val, frames_per_sequence, sequences_per_subject, yaw_range_deg)
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    ann_path = os.path.join(out_dir, "annotations.npz")
    if os.path.exists(ann_path):
        os.remove(ann_path)  # written last: its presence means "complete"

    chunk = max(1, min(frames_per_sequence * 2, -(-num // max(workers * 4, 1))))
    chunks = [list(range(i, min(i + chunk, num))) for i in range(0, num, chunk)]
    rows: list[dict | None] = [None] * num
    t_render = time.time()
    try:
        from tqdm import tqdm

        bar = tqdm(total=num, desc="synthetic", unit="img", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover
        bar = None
    args = (body, out_dir, seed, img_size, layout)
    if workers <= 1 or len(chunks) == 1:
        _init_worker(*args)
        results = map(_work, chunks)
        pool = None
    else:
        ctx = multiprocessing.get_context("spawn")
        saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV}
        os.environ.update(_SINGLE_THREAD_ENV)  # inherited by the spawned workers only
        try:
            pool = ctx.Pool(min(workers, len(chunks)), initializer=_init_worker, initargs=args)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results = pool.imap_unordered(_work, chunks)
    try:
        for res in results:
            for r in res:
                rows[r["index"]] = r
            if bar is not None:
                bar.update(len(res))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    render_s = time.time() - t_render

    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "validation"]
    _save(os.path.join(out_dir, "train.npz"), train_rows, with_subject=True)
    if val_rows:
        _save(os.path.join(out_dir, "validation.npz"), val_rows, with_subject=True)
    elif os.path.exists(os.path.join(out_dir, "validation.npz")):
        os.remove(os.path.join(out_dir, "validation.npz"))
    summary = {
        "generator": GENERATOR_VERSION,
        "num": num,
        "train": len(train_rows),
        "validation": len(val_rows),
        "seed": seed,
        "img_size": img_size,
        "val_fraction": val_fraction,
        "frames_per_sequence": frames_per_sequence,
        "sequences_per_subject": sequences_per_subject,
        "yaw_range_deg": yaw_range_deg,
        "train_subjects": len({r["subject"] for r in train_rows}),
        "validation_subjects": len({r["subject"] for r in val_rows}),
        "sequences": len({r["sequence"] for r in rows}),
        "body_model": os.path.abspath(model_path),
        "body_model_sha256": _sha256(model_path),
        "joint_set": "smpl24",
        "workers": workers,
        "render_seconds": round(render_s, 3),
        "images_per_second": round(num / max(render_s, 1e-9), 2),
        "files": {
            "annotations": "annotations.npz",
            "train": "train.npz",
            "validation": "validation.npz" if val_rows else None,
            "images": "images/",
            "preview": "preview.png" if write_preview else None,
        },
        "conventions": "camera frame OpenCV (+x right, +y down, +z forward); pose[:3] global "
        "orientation in the camera frame; S = joints - root (pelvis); camera-frame "
        "joints = S + cam_t; part = perspective projection with cam_focal, cam_center",
    }
    # annotations.npz last (atomic): its presence marks a complete data set.
    _save(ann_path + ".part.npz", train_rows + val_rows, with_subject=False)
    if write_preview:
        render.save_png(os.path.join(out_dir, "preview.png"), preview(out_dir, ann_path + ".part.npz"))
    summary["total_seconds"] = round(time.time() - t0, 3)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(ann_path + ".part.npz", ann_path)
    return summary

"""Turn images into SMPL parameters, meshes and overlays with a trained HMR checkpoint.

    python -m hmr_jax.predict --workdir=DIR --images PATH [PATH ...] --out OUT
        [--bbox x,y,w,h] [--checkpoint best|latest|STEP] [--batch-size N]

PATH is an image file or a folder (its image files, not recursive). Each image is cropped to a
square (around `--bbox`, a box in image pixels, top-left x, y, width, height, clipped to the
image and enlarged by `--bbox-scale` as the training crops are; or the whole image, centred and
padded with black), resized to the run's crop size and run through the model in batches. Per
image (<name> its file name's stem, made unique: a second 'a' becomes 'a_1'; an image named
'predictions' becomes 'predictions_1', the summary keeping its name), OUT gets:

  <name>.json          pose (72 axis-angle, SMPL order, global orientation in the camera frame),
                       betas (10), cam (s, tx, ty: weak perspective, normalised crop coordinates),
                       translation (perspective camera-frame translation of the body,
                       `geometry.weak_perspective_to_translation`), the crop box and the matching
                       full-image camera (focal length and principal point in image pixels);
                       with a keypoint head (config model.keypoint_head), keypoints_2d_image_px: the
                       head's 2D joints (the training data's joint set and order) in image pixels;
  <name>.obj           the mesh in the camera frame (OpenCV axes: +y down, +z forward; metres);
  <name>_overlay.png   the crop | the mesh drawn over it at the predicted camera | a side view.

and OUT/predictions.json (`SUMMARY_NAME`) lists every image with its outputs or its error. An
image that cannot be used (missing, unreadable, empty, zero-size, over --max-megapixels, --bbox
wholly outside it, or a crop less than 1% image, `MIN_IMAGE_SHARE`, the rest black padding) gets
a one-line error and the others go on; a --bbox reaching past the image is clipped to it, with a
note. The exit status is 1 when any image failed. Before the model loads, the run's config.json
is checked (`config_checks.check_run_config`: an invalid value is an error naming the key and the
file; a value edited since training, which config.py still holds, a warning) and OUT is created
and tested for writing (a file, a folder under a file or an unwritable folder: an error).
The body model is the one the run was trained with (config `body_model_path`, else the
procedural default).
"""

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from jaxtyping import Float, UInt8
from PIL import Image, ImageOps, UnidentifiedImageError

from hmr_jax import config_checks, render, sharding, smpl, steps
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import augment as augment_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DEFAULT_MAX_MEGAPIXELS = 50.0
DEFAULT_BBOX_SCALE = 1.2  # the synthetic data's and SPIN's box margin around the person
MAX_DISPLAY_SIZE = 512  # overlay crops: the box's own resolution, capped at this size
MIN_IMAGE_SHARE = 0.01  # a crop less than 1% image (the rest black padding) is refused
SUMMARY_NAME = "predictions.json"  # OUT/<this>: the run summary; no image's outputs take its name


class ImageError(ValueError):
    """An input image cannot be used; the message names the file and the problem."""


# ------------------------------------------------------------------------------------- image input


def list_images(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand folders (their image files, sorted) -> (image paths, [(path, error)] for bad paths)."""
    images, errors = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, n)
                for n in os.listdir(p)
                if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, n))
            )
            if not found:
                errors.append((p, f"folder holds no image files (expected extensions {', '.join(IMAGE_EXTENSIONS)})"))
            images += found
        else:
            images.append(p)
    return images, errors


def load_image(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> UInt8[np.ndarray, "h w 3"]:
    """Read an image as uint8 RGB (H, W, 3), EXIF orientation applied; raise `ImageError` saying why not."""

    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ImageError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    limit = int(max_megapixels * 1e6)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageError(f"{path}: zero-size image ({w}x{h} px)")
            if w * h > limit:
                raise ImageError(
                    f"{path}: {w}x{h} px = {w * h / 1e6:.1f} MP, over the {max_megapixels:g} MP limit "
                    f"(--max-megapixels)"
                )
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: absurdly large image ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can decode (corrupt or unknown format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageError(f"{path}: expected an RGB image, found array of shape {rgb.shape}")
    return rgb


def _to_rgb8(im) -> UInt8[np.ndarray, "h w 3"]:
    """A Pillow image as uint8 RGB. High-bit-depth single-channel images (16-bit grayscale PNG /
    TIFF: modes I;16*, I; float TIFF: F) are scaled to 8 bits as tf.io.decode_image scales them
    in training (Pillow's own convert("RGB") clips them to 255, a white image); a float image
    is taken as [0, 1] when its maximum is at most 1, else as [0, 255]."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, np.float64)
        if im.mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = np.floor(a / 256.0)  # the top 8 of 16 bits, as TensorFlow's uint16 -> uint8
        gray = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """'x,y,w,h' (image pixels, top-left corner, width, height; w, h > 0) -> floats, or None."""
    if not text:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"--bbox: expected 'x,y,w,h' (four numbers, w > 0, h > 0), found {text!r}")
    return box


def clip_bbox(image_hw: tuple[int, int], bbox: Sequence[float]) -> tuple[tuple[float, float, float, float], bool]:
    """The box (x, y, w, h, image pixels) intersected with the image [0, W] x [0, H] -> (box, clipped?).

    Raises ValueError when nothing of the box lies in the image."""
    h, w = image_hw
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"--bbox {x:g},{y:g},{bw:g},{bh:g} lies outside the {w}x{h} px image (expected a box overlapping "
            f"[0, {w}] x [0, {h}])"
        )
    box = (x0, y0, x1 - x0, y1 - y0)
    return box, box != (x, y, bw, bh)


def image_share(image_hw: tuple[int, int], cx: float, cy: float, side: float) -> float:
    """The share of the square crop (centre, side; edge coordinates) covered by the image's pixels."""
    h, w = image_hw
    ox = max(0.0, min(cx + side / 2.0, w) - max(cx - side / 2.0, 0.0))
    oy = max(0.0, min(cy + side / 2.0, h) - max(cy - side / 2.0, 0.0))
    return ox * oy / (side * side)


def crop_box(
    image_hw: tuple[int, int], bbox: Sequence[float] | None = None, bbox_scale: float = DEFAULT_BBOX_SCALE
) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side) in pixel-edge coordinates (the image spans [0, W] x [0, H]).

    With `bbox` (x, y, w, h): the box clipped to the image (`clip_bbox`; a box wholly outside it
    raises ValueError), centred on it, side = max(w, h) * bbox_scale. Without: the whole image,
    centred, side = max(H, W) (the shorter side padded with black). A crop less than
    `MIN_IMAGE_SHARE` of which is image (the rest is black padding) raises ValueError.
    """
    h, w = image_hw
    if bbox is None:
        cx, cy, side = w / 2.0, h / 2.0, float(max(h, w))
    else:
        (x, y, bw, bh), _ = clip_bbox(image_hw, bbox)
        cx, cy, side = x + bw / 2.0, y + bh / 2.0, float(max(bw, bh) * bbox_scale)
    share = image_share(image_hw, cx, cy, side)
    if share < MIN_IMAGE_SHARE:
        raise ValueError(
            f"the {side:.4g} px square crop around ({cx:.4g}, {cy:.4g}) holds {100 * share:.2g}% image pixels "
            f"(the rest black padding), expected at least {100 * MIN_IMAGE_SHARE:g}% "
            f"(image {w}x{h} px{', --bbox' if bbox is not None else ''})"
        )
    return cx, cy, side


def crop(image: UInt8[np.ndarray, "h w 3"], cx: float, cy: float, side: float, size: int) -> UInt8[np.ndarray, "s s 3"]:
    """The square [cx - side/2, cx + side/2] x [cy - side/2, cy + side/2] of `image` resized to
    (size, size) (bilinear, antialiased when shrinking; outside the image = black), uint8.

    Same geometry as the training crops (`data.augment`: box centre -> crop centre, side -> size).
    Only the output pixels the image reaches are resampled, from the image plus a black margin as
    wide as the filter (the result is that of resampling the whole zero-padded square), so a square
    far larger than the image costs no more memory than the image; when even that window would be
    large (a tiny share of image in a huge square), the image is first shrunk by an integer factor.
    """
    h, w = image.shape[:2]
    scale = side / size  # image px per output px
    x0, y0 = cx - side / 2.0, cy - side / 2.0
    reach = max(scale, 1.0)  # the bilinear filter's support in image px
    margin = math.ceil(4.0 * reach) + 3
    xi0, yi0 = math.floor(x0), math.floor(y0)
    xi1, yi1 = math.ceil(x0 + side), math.ceil(y0 + side)
    wx0, wy0, wx1, wy1 = max(xi0, -margin), max(yi0, -margin), min(xi1, w + margin), min(yi1, h + margin)
    if (wx1 - wx0) * (wy1 - wy0) > 4 * h * w + (1 << 20) and scale >= 4.0:
        f = int(scale // 2)
        small = np.asarray(Image.fromarray(image).reduce(f))
        return crop(small, cx * small.shape[1] / w, cy * small.shape[0] / h, side * small.shape[1] / w, size)

    def span(origin: float, extent: int) -> tuple[int, int]:  # output px whose filter may touch the image
        lo = math.floor((-reach - 1.0 - origin) / scale - 0.5)
        hi = math.ceil((extent + reach + 1.0 - origin) / scale - 0.5) + 1
        return max(lo, 0), min(hi, size)

    (u0, u1), (v0, v1) = span(x0, w), span(y0, h)
    out = np.zeros((size, size, 3), np.uint8)
    if u1 <= u0 or v1 <= v0 or wx1 <= wx0 or wy1 <= wy0:
        return out
    window = np.zeros((wy1 - wy0, wx1 - wx0, 3), np.uint8)  # the image and a black margin
    ix0, iy0, ix1, iy1 = max(wx0, 0), max(wy0, 0), min(wx1, w), min(wy1, h)
    if ix1 > ix0 and iy1 > iy0:
        window[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0] = image[iy0:iy1, ix0:ix1]
    box = (x0 + u0 * scale - wx0, y0 + v0 * scale - wy0, x0 + u1 * scale - wx0, y0 + v1 * scale - wy0)
    box = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], wx1 - wx0), min(box[3], wy1 - wy0))
    part = Image.fromarray(window).resize((u1 - u0, v1 - v0), Image.BILINEAR, box=box)
    out[v0:v1, u0:u1] = np.asarray(part)
    return out


def normalize(crop_u8: UInt8[np.ndarray, "s s 3"]) -> Float[np.ndarray, "s s 3"]:
    """uint8 RGB -> float32 ImageNet-normalised (as the training pipeline)."""
    mean, std = np.asarray(augment_lib.IMAGENET_MEAN, np.float32), np.asarray(augment_lib.IMAGENET_STD, np.float32)
    return ((crop_u8.astype(np.float32) / 255.0) - mean) / std


# --------------------------------------------------------------------------------------- the model


# ------------------------------------------------------------------------------------------ output


def render_front(vertices: Float[np.ndarray, "v 3"], faces: np.ndarray, focal: float, size: int):
    """The camera-frame mesh rendered into a (size, size) crop whose centre is the principal point
    (as `workdir.draw_predictions`): crop px = (weak-perspective x_norm + 1) * size / 2."""

    return render.render_mesh(vertices, faces, focal, (size / 2.0, size / 2.0), (size, size), cull_backfaces=True)


def render_panels(
    crop_u8: UInt8[np.ndarray, "d d 3"], vertices: Float[np.ndarray, "v 3"], faces: np.ndarray, focal: float
) -> UInt8[np.ndarray, "hh ww 3"]:
    """[crop | mesh over the crop | side view] (uint8), at the crop's resolution; `focal` in its px."""

    d = crop_u8.shape[0]
    centre = (d / 2.0, d / 2.0)
    front = render_front(vertices, faces, focal, d)
    side = render.side_view(
        vertices, faces, focal, centre, (d, d), background=np.full((d, d, 3), 255, np.uint8), cull_backfaces=True
    )
    return render.contact_sheet([crop_u8, render.overlay(crop_u8, front), side.image], cols=3)


def crop_to_image_px(points: Float[np.ndarray, "j 2"], box: Sequence[float], size: int) -> Float[np.ndarray, "j 2"]:
    """Normalised crop coordinates ([-1, 1], crop px = (x + 1) * size / 2, pixel centres at integers,
    as the training keypoints) -> image pixels (centres at integers) for the crop `box` (cx, cy, side
    in edge coordinates, `crop_box`'s)."""
    cx, cy, side = (float(v) for v in box)
    crop_px = (np.asarray(points, np.float64) + 1.0) * size / 2.0
    origin = np.array([cx - side / 2.0, cy - side / 2.0])
    return origin + (crop_px + 0.5) * side / size - 0.5


def _unique_stem(path: str, used: set[str]) -> str:
    """The image's file stem, made unique among `used` (compared case-insensitively, as on macOS and
    Windows file systems) and never the summary's (`SUMMARY_NAME`): 'a', 'a_1', 'a_2', ..."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "image"
    taken = {u.lower() for u in used} | {os.path.splitext(SUMMARY_NAME)[0].lower()}
    name, k = stem, 1
    while name.lower() in taken:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def check_output_dir(out_dir: str) -> str:
    """Create `out_dir` if needed and make sure files can be written in it; raise ValueError
    naming --out and why not. Returns its absolute path."""
    return workdir_lib.ensure_writable_folder(out_dir, f"--out {out_dir!r}")


def write_outputs(
    out_dir: str,
    stem: str,
    image_path: str,
    image_hw,
    box,
    pred: dict[str, np.ndarray],
    faces: np.ndarray,
    image: np.ndarray,
    config,
    step: int,
) -> dict[str, Any]:
    """Write <stem>.json, .obj and _overlay.png; return the JSON record."""

    size = config.data.img_size
    focal = steps.focal_length(config)
    cx, cy, side = (float(v) for v in box)
    obj_path = os.path.join(out_dir, f"{stem}.obj")
    png_path = os.path.join(out_dir, f"{stem}_overlay.png")
    json_path = os.path.join(out_dir, f"{stem}.json")
    smpl.save_obj(obj_path, pred["vertices"], faces)
    display = int(min(MAX_DISPLAY_SIZE, max(size, round(side))))
    shown = crop(image, cx, cy, side, display)
    render.save_png(png_path, render_panels(shown, pred["vertices"], faces, focal * display / size))
    record = {
        "image": os.path.abspath(image_path),
        "image_size": {"width": int(image_hw[1]), "height": int(image_hw[0])},
        "crop_box": {
            "x": cx - side / 2.0,
            "y": cy - side / 2.0,
            "side": side,
            "note": "square in image pixels (top-left x, y; edge coordinates), resized to img_size",
        },
        "img_size": size,
        "pose": [float(v) for v in pred["pose"]],
        "betas": [float(v) for v in pred["betas"]],
        "cam": [float(v) for v in pred["cam"]],
        "translation": [float(v) for v in pred["translation"]],
        "focal_length_crop_px": focal,
        "camera_image_px": {
            "focal_length": focal * side / size,
            "principal_point": crop_to_image_px(np.zeros((1, 2)), box, size)[0].tolist(),
            "note": "the same camera for the whole image (pixel centres at integers)",
        },
        "conventions": (
            "pose: 24 x axis-angle (rad), SMPL joint order, global orientation in the OpenCV camera "
            "frame; cam (s, tx, ty): crop px = (s * (X[:2] + (tx, ty)) + 1) * img_size / 2; "
            "translation = (tx, ty, 2 f / (img_size s)) with f = focal_length_crop_px; mesh vertices = "
            "SMPL(pose, betas) + translation (camera frame, metres)"
        ),
        "checkpoint_step": int(step),
        **(
            {"keypoints_2d_image_px": crop_to_image_px(pred["keypoints_2d"], box, size).round(2).tolist()}
            if "keypoints_2d" in pred
            else {}
        ),
        "obj": obj_path,
        "overlay": png_path,
    }
    with open(json_path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    record["json"] = json_path
    return record


# ------------------------------------------------------------------------------------------ runner


def predict(
    workdir: str,
    images: Sequence[str],
    out_dir: str,
    bbox: Sequence[float] | None = None,
    checkpoint: str | int = "best",
    batch_size: int = 8,
    bbox_scale: float = DEFAULT_BBOX_SCALE,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: bool = True,
    log=lambda msg: print(msg, file=sys.stderr),
) -> dict[str, Any]:
    """Predict every image (files or folders); returns the summary (also OUT/predictions.json,
    `SUMMARY_NAME`): {'done': [records], 'failed': [{'image', 'error'}], ...}. Bad images (and boxes
    outside them) are logged and skipped; a bad config.json or --out raises ValueError first."""

    if batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, found {batch_size}")
    if not bbox_scale > 0:
        raise ValueError(f"--bbox-scale: expected a number > 0, found {bbox_scale}")
    t0 = time.time()
    workdir = os.path.abspath(workdir)
    config = workdir_lib.load_run_config(workdir)
    edits = config_checks.check_run_config(config, workdir, "predict")
    if edits:
        log(f"warning: {workdir}/config.json differs from the config.py training wrote: {'; '.join(edits)}")
    checkpoint = workdir_lib.parse_checkpoint(checkpoint) if not isinstance(checkpoint, int) else checkpoint
    out_dir = check_output_dir(out_dir)  # before the model loads: a bad --out fails in seconds
    paths, failed = list_images(images)
    failed = [{"image": p, "error": e} for p, e in failed]
    for f in failed:
        log(f"error: {f['image']}: {f['error']}")
    n_dev = jax.device_count()
    batch_size = -(-batch_size // n_dev) * n_dev  # a multiple of the devices (the batch is sharded)
    size = config.data.img_size

    mesh = sharding.make_mesh()
    done: list[dict[str, Any]] = []
    with jax.set_mesh(mesh):
        smpl_host = smpl.load(workdir_lib.body_model_path(config))
        faces = np.asarray(smpl_host.faces)
        smpl_model = sharding.replicate(smpl_host, mesh)
        parts = state_lib.make_static_parts(config)
        state, _, step, note = workdir_lib.restore_checkpoint(workdir, config, parts, mesh, checkpoint)
        predict_fn = jax.jit(steps.make_predict(config, parts))
        used: set[str] = set()
        bar = tqdm.tqdm(
            total=len(paths), disable=not progress or len(paths) < 2, unit="img", desc="predict", dynamic_ncols=True
        )

        def say(msg):
            (bar.write if not bar.disable else log)(msg)

        pending: list[tuple[str, np.ndarray, tuple]] = []

        def flush():
            if not pending:
                return
            batch = np.stack([normalize(crop(img, *box, size)) for _, img, box in pending])  # (n, S, S, 3)
            n = len(batch)
            if n < batch_size:  # pad to one compiled shape
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
            out = predict_fn(state, sharding.to_global({"image": batch}, mesh)["image"], smpl_model)
            out = {k: np.asarray(jax.device_get(v))[:n] for k, v in out.items()}
            for i, (path, img, box) in enumerate(pending):
                try:
                    rec = write_outputs(
                        out_dir,
                        _unique_stem(path, used),
                        path,
                        img.shape[:2],
                        box,
                        {k: v[i] for k, v in out.items()},
                        faces,
                        img,
                        config,
                        step,
                    )
                    done.append(rec)
                except OSError as e:
                    failed.append({"image": path, "error": f"could not write outputs: {e}"})
                    say(f"error: {path}: could not write outputs: {e}")
                bar.update(1)
            pending.clear()

        for path in paths:
            try:
                img = load_image(path, max_megapixels)
                box = crop_box(img.shape[:2], bbox, bbox_scale)
            except ValueError as e:  # ImageError, or a box outside the image / a crop of mostly padding
                failed.append({"image": path, "error": str(e).removeprefix(f"{path}: ")})
                say(f"error: {path}: {str(e).removeprefix(f'{path}: ')}")
                bar.update(1)
                continue
            if bbox is not None and clip_bbox(img.shape[:2], bbox)[1]:
                clipped = ",".join(f"{v:g}" for v in clip_bbox(img.shape[:2], bbox)[0])
                say(f"note: {path}: --bbox clipped to the {img.shape[1]}x{img.shape[0]} px image: {clipped}")
            pending.append((path, img, box))
            if len(pending) == batch_size:
                flush()
        flush()
        bar.close()
    summary = {
        "workdir": workdir,
        "checkpoint": {"requested": str(checkpoint), "step": step, "loaded": note},
        "bbox": list(bbox) if bbox is not None else None,
        **({"config_edits": edits} if edits else {}),
        "done": done,
        "failed": failed,
        "seconds": round(time.time() - t0, 2),
    }
    with open(os.path.join(out_dir, SUMMARY_NAME), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary

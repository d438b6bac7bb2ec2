"""Turn images into SMPL parameters, meshes and overlays with a trained HMR checkpoint.

    python -m hmr_jax.predict --workdir=DIR --images PATH [PATH ...] --out OUT
        [--bbox x,y,w,h] [--checkpoint best|latest|STEP] [--batch-size N]

PATH is an image file or a folder (its image files, not recursive). The people of an image come
from `--keypoints` / `--boxes` (`people.PeopleFinder`; formats in `hmr_jax.people`), `--bbox`, or
the whole image; each is cropped to a square (around its box, a box in image pixels, top-left x, y,
width, height, clipped to the image and enlarged by `--bbox-scale` as the training crops are; or
the whole image, centred and padded with black), resized to the run's crop size, and all people
of an image go through the model in one batch. Per image (<name> its file name's stem, made
unique: a second 'a' becomes 'a_1'; an image named 'predictions' becomes 'predictions_1'), OUT gets:

  <name>.json          the full image's camera (camera_image_px: focal length, `--focal-length`
                       or 5000 / 256 x max(H, W), and principal point, `--principal-point` or the
                       centre) and per person: its source and box, the crop box, pose (72
                       axis-angle and 24 rotation matrices), betas, cam (s, tx, ty: the crop's
                       weak perspective), translation_crop, translation (in the full image's
                       camera, `full_frame_translation`), the 24 SMPL joints in image pixels and,
                       with a keypoint head, its keypoints_2d_image_px;
  <name>_<i>.obj       person i's mesh in the full image's camera (OpenCV axes, metres);
  <name>_overlay.png   the image | all people drawn over it (one z-buffer) | a side view.

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

from hmr_jax import config_checks, geometry, render, sharding, smpl, steps
from hmr_jax import people as people_lib
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import augment as augment_lib
from hmr_jax.people import PeopleFinder  # noqa: F401  (the CLI's)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DEFAULT_MAX_MEGAPIXELS = 50.0
DEFAULT_BBOX_SCALE = 1.2  # the synthetic data's and SPIN's box margin around the person
MAX_DISPLAY_SIZE = 1024  # overlays: the image's own resolution, its longer side capped at this size
DEFAULT_FOCAL_PER_PX = 5000.0 / 256.0  # full-image focal = this x max(H, W) (4D-Humans, CLIFF)
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


def parse_point(text: str | None) -> tuple[float, float] | None:
    """'cx,cy' (--principal-point, image pixels) -> floats, or None."""
    if not text:
        return None
    try:
        point = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        point = ()
    if len(point) != 2 or not all(math.isfinite(v) for v in point):
        raise ValueError(f"--principal-point: expected 'cx,cy' (two numbers, image pixels), found {text!r}")
    return point


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


def default_focal_length(image_hw: tuple[int, int]) -> float:
    """The full-image focal length (px) of 4D-Humans and CLIFF: 5000 / 256 x max(H, W)."""
    return DEFAULT_FOCAL_PER_PX * max(image_hw)


def full_frame_translation(
    cam: Float[np.ndarray, "3"], crop_centre_px, side: float, focal: float, principal_point
) -> Float[np.ndarray, "3"]:
    """A body's translation in the full image's camera from its crop camera.

    cam = (s, tx, ty): the crop's weak-perspective camera; `crop_centre_px`: where the crop's
    centre (normalised 0, 0) lies in image pixels (`crop_to_image_px` of 0); `side`: the crop
    square's side in image pixels; `focal` and `principal_point` (cx, cy): the full image's camera
    in pixels (pixel centres at integers). Returns

        t = (tx + 2 (c_x - p_x) / (s side), ty + 2 (c_y - p_y) / (s side), 2 focal / (s side)),

    with which the full-image camera sees, at depth t_z, exactly what the crop's weak-perspective
    camera sees: focal (X + t)_xy / t_z + p = c + side / 2 s (X_xy + (tx, ty)). Perspective
    differs from that by the body's depth relative to t_z (docs/conventions.md)."""
    s, tx, ty = (float(v) for v in cam)
    k = 2.0 / (s * side)
    return np.array(
        [
            tx + k * (crop_centre_px[0] - principal_point[0]),
            ty + k * (crop_centre_px[1] - principal_point[1]),
            k * focal,
        ]
    )


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


def full_camera(image_hw, focal_length: float | None, principal_point) -> tuple[float, tuple[float, float]]:
    """The full image's camera (focal px, principal point px): given, else `default_focal_length` and
    the image centre ((W - 1) / 2, (H - 1) / 2 with pixel centres at integers)."""
    h, w = image_hw
    f = float(focal_length) if focal_length else default_focal_length(image_hw)
    p = tuple(float(v) for v in principal_point) if principal_point is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    return f, p


def person_record(box, pred: dict[str, np.ndarray], size: int, camera) -> dict[str, Any]:
    """One person's JSON record (and 'vertices_full': the mesh in the full image's camera)."""
    cx, cy, side = (float(v) for v in box)
    centre = crop_to_image_px(np.zeros((1, 2)), box, size)[0]
    t_full = full_frame_translation(pred["cam"], centre, side, *camera)
    joints_norm = pred["cam"][0] * pred["joints"][:, :2]  # weak perspective: joints carry (tx, ty)
    rec = {
        "crop_box": {"x": cx - side / 2.0, "y": cy - side / 2.0, "side": side},
        "pose": [float(v) for v in pred["pose"]],
        "pose_rotmat": np.asarray(pred["pose_rotmat"], np.float64).round(6).tolist(),
        "betas": [float(v) for v in pred["betas"]],
        "cam": [float(v) for v in pred["cam"]],
        "translation_crop": [float(v) for v in pred["translation"]],
        "translation": [float(v) for v in t_full],
        "joints_2d_image_px": crop_to_image_px(joints_norm, box, size).round(3).tolist(),
    }
    if "keypoints_2d" in pred:
        rec["keypoints_2d_image_px"] = crop_to_image_px(pred["keypoints_2d"], box, size).round(3).tolist()
    rec["vertices_full"] = pred["vertices"] - pred["translation"] + t_full
    return rec


CONVENTIONS = (
    "per person: pose: 24 x axis-angle (rad), SMPL joint order, global orientation in the OpenCV camera "
    "frame (pose_rotmat: the same as 3x3 matrices); cam (s, tx, ty): the crop's weak-perspective camera, "
    "crop px = (s * (X[:2] + (tx, ty)) + 1) * img_size / 2; translation_crop = (tx, ty, 2 f / (img_size s)) "
    "with f = focal_length_crop_px; translation: the body in the full image's camera (camera_image_px), "
    "mesh = SMPL(pose, betas) + translation; joints_2d_image_px: the 24 SMPL joints, keypoints_2d_image_px: "
    "the keypoint head's, in image pixels (centres at integers); see docs/conventions.md"
)


def write_outputs(out_dir, stem, image_path, image, entries, faces, config, step, camera) -> dict[str, Any]:
    """Write <stem>.json, <stem>_<i>.obj per person and <stem>_overlay.png (all people together);
    return the JSON record. `entries`: [(crop box, Person or None, prediction)] of one image."""
    size = config.data.img_size
    h, w = image.shape[:2]
    people = []
    for i, (box, person, pred) in enumerate(entries):
        rec = person_record(box, pred, size, camera)
        if person is not None:
            rec = {
                "source": person.source,
                "box": list(person.box),
                **({"score": person.score} if person.score is not None else {}),
                **rec,
            }
        rec["obj"] = os.path.join(out_dir, f"{stem}_{i}.obj")
        smpl.save_obj(rec["obj"], rec["vertices_full"], faces)
        people.append(rec)
    k = min(1.0, MAX_DISPLAY_SIZE / max(h, w))  # the overlay's scale
    shown = np.asarray(Image.fromarray(image).resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR))
    kx, ky = shown.shape[1] / w, shown.shape[0] / h
    png_path = os.path.join(out_dir, f"{stem}_overlay.png")
    f, (px, py) = camera
    panels = render.render_people(
        [r.pop("vertices_full") for r in people], faces, f * kx, ((px + 0.5) * kx - 0.5, (py + 0.5) * ky - 0.5), shown
    )
    render.save_png(png_path, panels)
    record = {
        "image": os.path.abspath(image_path),
        "image_size": {"width": int(w), "height": int(h)},
        "camera_image_px": {"focal_length": f, "principal_point": [px, py], "note": "pixel centres at integers"},
        "img_size": size,
        "focal_length_crop_px": steps.focal_length(config),
        "checkpoint_step": int(step),
        "people": people,
        "conventions": CONVENTIONS,
        "overlay": png_path,
    }
    json_path = os.path.join(out_dir, f"{stem}.json")
    with open(json_path, "w") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")
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
    finder: people_lib.PeopleFinder | None = None,
    focal_length: float | None = None,
    principal_point: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Predict every person of every image (files or folders); returns the summary (also
    OUT/predictions.json, `SUMMARY_NAME`): {'done': [records], 'failed': [{'image', 'error'}], ...}.
    People come from `finder` (`people.PeopleFinder`: OpenPose or boxes JSON), else `bbox`, else
    the whole image; an image's people go through the model in one batch. Bad images, boxes outside
    them and keypoint / box files naming no person are logged and skipped; a bad config.json or
    --out raises ValueError first."""

    if batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, found {batch_size}")
    if not bbox_scale > 0:
        raise ValueError(f"--bbox-scale: expected a number > 0, found {bbox_scale}")
    if focal_length is not None and not (math.isfinite(focal_length) and focal_length > 0):
        raise ValueError(f"--focal-length: expected a number > 0 (pixels), found {focal_length}")
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
        body_fn = jax.jit(_joints_and_rotmats)
        used: set[str] = set()
        bar = tqdm.tqdm(
            total=len(paths), disable=not progress or len(paths) < 2, unit="img", desc="predict", dynamic_ncols=True
        )

        def say(msg):
            (bar.write if not bar.disable else log)(msg)

        pending: list[tuple[str, np.ndarray, list, list[str]]] = []  # (path, image, [(box, person)], skipped)

        def flush():
            if not pending:
                return
            crops = [normalize(crop(img, *box, size)) for _, img, items, _ in pending for box, _ in items]
            batch = np.stack(crops)  # (n, S, S, 3): every person of the pending images
            n = len(batch)
            padded = -(-n // batch_size) * batch_size  # one compiled shape (more when an image has more people)
            if n < padded:
                batch = np.concatenate([batch, np.repeat(batch[-1:], padded - n, axis=0)])
            out = predict_fn(state, sharding.to_global({"image": batch}, mesh)["image"], smpl_model)
            out.update(body_fn(smpl_model, out["betas"], out["pose"], out["translation"]))
            out = {k: np.asarray(jax.device_get(v))[:n] for k, v in out.items()}
            i = 0
            for path, img, items, skipped in pending:
                entries = [
                    (box, person, {k: v[i + j] for k, v in out.items()}) for j, (box, person) in enumerate(items)
                ]
                i += len(items)
                try:
                    camera = full_camera(img.shape[:2], focal_length, principal_point)
                    stem = _unique_stem(path, used)
                    rec = write_outputs(out_dir, stem, path, img, entries, faces, config, step, camera)
                    if skipped:
                        rec["skipped_people"] = skipped
                    done.append(rec)
                except OSError as e:
                    failed.append({"image": path, "error": f"could not write outputs: {e}"})
                    say(f"error: {path}: could not write outputs: {e}")
                bar.update(1)
            pending.clear()

        for path in paths:
            try:
                img = load_image(path, max_megapixels)
                items, skipped = find_people(img.shape[:2], path, finder, bbox, bbox_scale)
            except ValueError as e:  # ImageError, PeopleError, a box outside the image / of mostly padding
                failed.append({"image": path, "error": str(e).removeprefix(f"{path}: ")})
                say(f"error: {path}: {str(e).removeprefix(f'{path}: ')}")
                bar.update(1)
                continue
            if bbox is not None and finder is None and clip_bbox(img.shape[:2], bbox)[1]:
                clipped = ",".join(f"{v:g}" for v in clip_bbox(img.shape[:2], bbox)[0])
                say(f"note: {path}: --bbox clipped to the {img.shape[1]}x{img.shape[0]} px image: {clipped}")
            for why in skipped:
                say(f"note: {path}: person skipped: {why}")
            if pending and sum(len(p[2]) for p in pending) + len(items) > batch_size:
                flush()  # an image's people stay in one batch
            pending.append((path, img, items, skipped))
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


def _joints_and_rotmats(smpl_model, betas, pose, transl):
    """The 24 SMPL joints (camera frame, crop translation) and the pose as (B, 24, 3, 3) matrices."""
    rotmat = geometry.axis_angle_to_matrix(pose.reshape(pose.shape[0], 24, 3))
    return {"joints": smpl.forward(smpl_model, betas, rotmat, transl=transl).joints, "pose_rotmat": rotmat}


def find_people(image_hw, path, finder, bbox, bbox_scale) -> tuple[list, list[str]]:
    """An image's people -> ([(crop box, Person or None)], [why a person was skipped]); raises
    ValueError naming the file when none is left."""
    if finder is None or not finder.active:
        return [(crop_box(image_hw, bbox, bbox_scale), None)], []
    found = finder.find(path)
    items, skipped = [], list(found.skipped)
    for person in found.people:
        try:
            items.append((crop_box(image_hw, person.box, bbox_scale), person))
        except ValueError as e:
            skipped.append(f"{person.source}: {e}")
    if not items:
        raise people_lib.PeopleError(f"no person left: {'; '.join(skipped)}")
    return items, skipped

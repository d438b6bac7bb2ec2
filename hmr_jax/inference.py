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
  <name>_overlay.png   the image (`display_size`: its longer side brought into 256 to 1024 px) |
                       all people drawn over it (one z-buffer) | a side view (`side_view_size`;
                       depth runs left to right, and people far apart are drawn closer, at a
                       dashed line, so that each stays legible: `render.side_layout`).

and OUT/predictions.json (`SUMMARY_NAME`) lists every image with its outputs or its error. An
image that cannot be used (missing, unreadable, empty, zero-size, over --max-megapixels, --bbox
wholly outside it, no person left, or a crop less than 1% image, `MIN_IMAGE_SHARE`, the rest
black padding: an image over 100 times as wide as tall, or as tall as wide, needs a box) gets a
one-line error and the others go on. A box (--bbox or a person's) reaching past the image is
clipped to it, with a note; a person's box wholly outside it leaves that person out, with a note
(and in the JSON's skipped_people), while the image's other people go on. The exit status is 1
when any image failed. Before the model loads, the run's config.json is checked
(`config_checks.check_run_config`: an invalid value is an error naming the key and the file; a
value edited since training, which config.py still holds, a warning) and OUT is created and
tested for writing (a file, a folder under a file or an unwritable folder: an error). The body model is the one the run was trained with (config `body_model_path`, else the
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
from jaxtyping import Float
from PIL import Image

from hmr_jax import config_checks, geometry, render, sharding, smpl, steps
from hmr_jax import images as images_lib
from hmr_jax import people as people_lib
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib

MAX_DISPLAY_SIZE = 1024  # overlays: the image's own resolution, its longer side capped at this size
MIN_DISPLAY_SIZE = 256  # ... and enlarged (nearest neighbour) to this size; the side view at least this
DEFAULT_FOCAL_PER_PX = 5000.0 / 256.0  # full-image focal = this x max(H, W) (4D-Humans, CLIFF)
SUMMARY_NAME = "predictions.json"  # OUT/<this>: the run summary; no image's outputs take its name


# ------------------------------------------------------------------------------------- image input


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


def display_size(image_hw: tuple[int, int]) -> tuple[int, int]:
    """The overlay's panels (H, W) for an image: its own size, the longer side brought into
    [`MIN_DISPLAY_SIZE`, `MAX_DISPLAY_SIZE`] (width x height: a 6000x4000 image is shown at
    1024x683, a 16x9 one at 256x144, an 8000x40 one at 1024x5)."""
    h, w = image_hw
    k = min(MAX_DISPLAY_SIZE / max(h, w), max(1.0, MIN_DISPLAY_SIZE / max(h, w)))
    return max(1, round(h * k)), max(1, round(w * k))


def side_view_size(shown_hw: tuple[int, int]) -> tuple[int, int]:
    """The side view's panel (H, W): the image panels' size, each side at least `MIN_DISPLAY_SIZE` and
    half the other (width x height: a 1024x5 panorama's is 1024x512, a 1024x683 photo's its own size)."""
    h, w = shown_hw
    return max(h, MIN_DISPLAY_SIZE, w // 2), max(w, MIN_DISPLAY_SIZE, h // 2)


def unique_stem(path: str, used: set[str]) -> str:
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


def write_json(path: str, record: dict[str, Any]) -> None:
    """An output record as indented JSON (predict's and fit's per-image files and summaries)."""
    with open(path, "w") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")


def report_failures(summary: dict[str, Any]) -> int:
    """The images that failed, one line on stderr; the CLI's exit status (1 when any failed)."""
    failed = summary["failed"]
    if not failed:
        return 0
    print(f"FAILED ({len(failed)}): " + "; ".join(f"{f['image']}: {f['error']}" for f in failed), file=sys.stderr)
    return 1


def shown_image(image: np.ndarray) -> np.ndarray:
    """The image at overlay size (`display_size`): bilinear when shrunk, nearest neighbour when
    enlarged (the pixels stay visible)."""
    h = image.shape[0]
    shown_hw = display_size(image.shape[:2])
    resample = Image.BILINEAR if shown_hw[0] < h else Image.NEAREST
    return np.asarray(Image.fromarray(image).resize(shown_hw[::-1], resample))


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
    shown = shown_image(image)
    kx, ky = shown.shape[1] / w, shown.shape[0] / h
    png_path = os.path.join(out_dir, f"{stem}_overlay.png")
    f, (px, py) = camera
    panels = render.render_people(
        [r.pop("vertices_full") for r in people],
        faces,
        (f * kx, f * ky),
        ((px + 0.5) * kx - 0.5, (py + 0.5) * ky - 0.5),
        shown,
        side_size=side_view_size(shown.shape[:2]),
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
    write_json(json_path, record)
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
    bbox_scale: float = images_lib.DEFAULT_BBOX_SCALE,
    max_megapixels: float = images_lib.DEFAULT_MAX_MEGAPIXELS,
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
    paths, failed = images_lib.list_images(images)
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
            crops = [
                images_lib.normalize(images_lib.crop(img, *box, size))
                for _, img, items, _ in pending
                for box, _ in items
            ]
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
                    stem = unique_stem(path, used)
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
                img = images_lib.load_image(path, max_megapixels)
                items, skipped = find_people(img.shape[:2], path, finder, bbox, bbox_scale)
            except ValueError as e:  # ImageError, PeopleError, a box outside the image / of mostly padding
                failed.append({"image": path, "error": str(e).removeprefix(f"{path}: ")})
                say(f"error: {path}: {str(e).removeprefix(f'{path}: ')}")
                bar.update(1)
                continue
            given = [(p.box, f"person {p.source}: box") for _, p in items if p is not None]
            for box, what in given or ([(bbox, "--bbox")] if bbox is not None else []):
                clipped, was_clipped = images_lib.clip_bbox(img.shape[:2], box)
                if was_clipped:
                    text = ",".join(f"{v:g}" for v in clipped)
                    say(f"note: {path}: {what} clipped to the {img.shape[1]}x{img.shape[0]} px image: {text}")
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
    write_json(os.path.join(out_dir, SUMMARY_NAME), summary)
    return summary


def _joints_and_rotmats(smpl_model, betas, pose, transl):
    """The 24 SMPL joints (camera frame, crop translation) and the pose as (B, 24, 3, 3) matrices."""
    rotmat = geometry.axis_angle_to_matrix(pose.reshape(pose.shape[0], 24, 3))
    return {"joints": smpl.forward(smpl_model, betas, rotmat, transl=transl).joints, "pose_rotmat": rotmat}


def find_people(image_hw, path, finder, bbox, bbox_scale) -> tuple[list, list[str]]:
    """An image's people -> ([(crop box, Person or None)], [why a person was skipped]); raises
    ValueError naming the file when none is left."""
    if finder is None or not finder.active:
        return [(images_lib.crop_box(image_hw, bbox, bbox_scale), None)], []
    found = finder.find(path)
    items, skipped = [], list(found.skipped)
    for person in found.people:
        try:
            items.append((images_lib.crop_box(image_hw, person.box, bbox_scale, name="box"), person))
        except ValueError as e:
            skipped.append(f"{person.source}: {e}")
    if not items:
        raise people_lib.PeopleError(f"no person left: {'; '.join(skipped)}")
    return items, skipped

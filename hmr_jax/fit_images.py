"""What `python -m hmr_jax.fit` does, as functions: OpenPose keypoints of images -> SMPLify -> files.

    from hmr_jax import fit_images
    summary = fit_images.fit_images(["photos/"], "openpose/", "out/", workdir=None)

Every person of every image is fitted (`solver.fit`) to its OpenPose keypoints in the full
image's pixels, with the full image's camera (`inference.full_camera`). The people of all images
go through one compiled program in batches of a fixed size: a batch is filled across images and
padded with confidence-0 people, whose results are dropped. The start is the regressor's
prediction when a run directory is given (`inference.predict`, whose own outputs stay in
OUT/regressor), else the mean pose facing the camera with a translation estimated from the
keypoints (`solver.mean_init`, `solver.estimate_translation`).

Keypoints (`body25`): OpenPose BODY_25 as is; the older COCO-18 files (OpenPose 1.0
`pose_keypoints`) are put in BODY_25 order, with confidence 0 for the points COCO lacks (mid-hip,
big and small toes, heels). A point of confidence <= 0 (or not finite) is missing.
"""

import dataclasses
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from hmr_jax import body_model as body_model_lib
from hmr_jax import images as images_lib
from hmr_jax import inference, render, smpl
from hmr_jax import people as people_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.fitting import keypoints as kp_lib
from hmr_jax.fitting import objective, solver
from hmr_jax.fitting import prior as prior_lib

SUMMARY_NAME = "fits.json"  # OUT/<this>: the run summary; no image's outputs take its name
REGRESSOR_DIR = "regressor"  # OUT/<this>: predict's outputs, the starts of a --workdir run
KEYPOINT_SET = "openpose25"
NUM_KEYPOINTS = len(kp_lib.OPENPOSE25_NAMES)
NUM_BETAS = 10
# COCO-18 (OpenPose 1.0) point i is BODY_25 point COCO18_TO_BODY25[i]: BODY_25 inserts mid-hip (8)
# and appends the toes and heels (19..24).
COCO18_TO_BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
DETECTED_COLOR = (255, 48, 48)  # overlay dots: the OpenPose keypoints
FITTED_COLOR = (32, 230, 64)  # the fitted body's keypoints, projected
CONVENTIONS = (
    "per person: pose: 24 x axis-angle (rad), SMPL joint order, global orientation in the OpenCV camera frame "
    "(camera_image_px); mesh = SMPL(pose, betas) + translation (metres); keypoints_2d_image_px: the fitted body's "
    "OpenPose BODY_25 points projected, image pixels (centres at integers); error_px: mean distance to the "
    "OpenPose points of confidence > 0; start_error_px: the same for the start (regressor_error_px when the "
    "start is the regressor's prediction); loss / reprojection_loss: SMPLify's stage-2 objective and its "
    "reprojection term per keypoint (hmr_jax.fitting.objective)"
)


# ------------------------------------------------------------------------------------------ keypoints


def body25(keypoints: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """(K, 3) OpenPose x, y, confidence -> ((25, 3) in BODY_25 order, 'BODY_25' | 'COCO-18').

    COCO-18's points go to their BODY_25 places (`COCO18_TO_BODY25`); mid-hip, toes and heels get
    confidence 0. Non-finite points and negative confidences become confidence 0. Any other number
    of points is a `people.PeopleError` starting with `where`.
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    if len(kp) == NUM_KEYPOINTS:
        out, kind = kp.copy(), "BODY_25"
    elif len(kp) == len(COCO18_TO_BODY25):
        out, kind = np.zeros((NUM_KEYPOINTS, 3)), "COCO-18"
        out[list(COCO18_TO_BODY25)] = kp
    else:
        raise people_lib.PeopleError(
            f"{where}: expected OpenPose BODY_25 (25 keypoints) or COCO-18 (18 keypoints), found {len(kp)}"
        )
    bad = ~np.all(np.isfinite(out), axis=1)
    out[bad] = 0.0
    out[:, 2] = np.maximum(out[:, 2], 0.0)
    return out, kind


def read_people(finder: people_lib.PeopleFinder, image_path: str) -> tuple[list, np.ndarray, list[str], list[str]]:
    """An image's people from its OpenPose file -> (people, (P, 25, 3) BODY_25 keypoints, their
    formats, [why a person was skipped]); raises `people.PeopleError` when none is left."""
    found = finder.find(image_path)
    people, points, kinds, skipped = [], [], [], list(found.skipped)
    for person in found.people:
        try:
            kp, kind = body25(person.keypoints, person.source)
        except people_lib.PeopleError as e:
            skipped.append(str(e))
            continue
        people.append(person)
        points.append(kp)
        kinds.append(kind)
    if not people:
        raise people_lib.PeopleError(f"no person left: {'; '.join(skipped)}")
    return people, np.stack(points), kinds, skipped


# --------------------------------------------------------------------------------------------- starts


def regressor_starts(summary: dict[str, Any]) -> dict[str, deque]:
    """`inference.predict`'s summary -> {absolute image path: deque of {person source: (pose (72,),
    betas (10,), translation (3,), in the full image's camera)}} (a deque: an image listed twice
    was predicted twice, in order)."""
    starts: dict[str, deque] = {}
    for rec in summary["done"]:
        people = {
            p["source"]: (
                np.asarray(p["pose"], np.float32),
                np.asarray(p["betas"], np.float32),
                np.asarray(p["translation"], np.float32),
            )
            for p in rec["people"]
            if "source" in p
        }
        starts.setdefault(os.path.abspath(rec["image"]), deque()).append(people)
    return starts


# ---------------------------------------------------------------------------------------------- fitting


@dataclasses.dataclass
class ImageJob:
    """One image in flight: its people's keypoints and starts in, their fits out."""

    path: str
    stem: str
    shown: np.ndarray  # (h, w, 3): the image at overlay size
    image_hw: tuple[int, int]
    camera: tuple[float, tuple[float, float]]  # full image: focal px, principal point px
    people: list
    keypoints: np.ndarray  # (P, 25, 3) BODY_25 x, y, confidence
    formats: list[str]
    starts: list  # per person: (pose, betas, translation) of the regressor, or None (the mean start)
    skipped: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)
    fits: list = dataclasses.field(default_factory=list)  # per person, filled by `fit_people`

    @property
    def complete(self) -> bool:
        return len(self.fits) == len(self.people) and all(f is not None for f in self.fits)


def _start(kb, pose, betas, transl, given, keypoints_2d, confidence, focal, center):
    """Translations of the start (given, or estimated from the keypoints) and its pixel error."""
    points = kp_lib.keypoints_3d(kb, betas, pose)  # (B, 25, 3), no translation
    present = (confidence > 0).astype(points.dtype)
    estimated = solver.estimate_translation(points, keypoints_2d, present, focal, center)
    transl = jnp.where(given[:, None], transl, estimated)
    proj = objective.project(points + transl[:, None, :], focal, center)
    return transl, objective.mean_pixel_error(proj, keypoints_2d, confidence)


_start_jit = jax.jit(_start)


@jax.jit
def _vertices(model, betas, pose, transl):
    return smpl.forward(model, betas, pose, transl).vertices  # (B, V, 3)


@dataclasses.dataclass
class Fitter:
    """The body model, its keypoints, the prior and the config: `fit_people` fits one batch."""

    model: smpl.SMPLModel  # on the device
    kb: kp_lib.KeypointBody
    prior: prior_lib.PosePrior
    config: objective.FitConfig
    batch_size: int
    mean_pose: np.ndarray  # (72,)
    mean_betas: np.ndarray  # (NUM_BETAS,)
    seconds: float = 0.0  # in fit_people (device work included)
    first_batch_seconds: float | None = None  # the first batch, compilation included

    @classmethod
    def create(cls, model, prior, config, batch_size) -> "Fitter":
        kb = kp_lib.keypoint_body(model, (KEYPOINT_SET,))
        if model.num_betas < NUM_BETAS:
            raise ValueError(f"body model: expected at least {NUM_BETAS} shape directions, found {model.num_betas}")
        mean = solver.mean_init(prior, 1, NUM_BETAS)
        return cls(
            model=jax.device_put(model),
            kb=kb,
            prior=prior,
            config=config,
            batch_size=batch_size,
            mean_pose=np.asarray(mean.pose[0], np.float32),
            mean_betas=np.asarray(mean.betas[0], np.float32),
        )

    def fit_people(self, rows: Sequence[tuple[ImageJob, int]]) -> None:
        """Fit the people `rows` ((job, person index), at most batch_size) padded to batch_size with
        confidence-0 people; each job's `fits[i]` gets the person's results."""
        n, b = len(rows), self.batch_size
        if not 0 < n <= b:
            raise ValueError(f"fit_people: expected 1 to {b} people, found {n}")
        t0 = time.perf_counter()
        kp = np.zeros((b, NUM_KEYPOINTS, 3), np.float32)
        focal = np.empty((b,), np.float32)
        center = np.empty((b, 2), np.float32)
        pose = np.tile(self.mean_pose, (b, 1))
        betas = np.tile(self.mean_betas, (b, 1))
        transl = np.zeros((b, 3), np.float32)
        given = np.zeros((b,), bool)
        for r, (job, i) in enumerate(rows):
            kp[r] = job.keypoints[i]
            focal[r], center[r] = job.camera[0], job.camera[1]
            if job.starts[i] is not None:
                pose[r], betas[r], transl[r] = job.starts[i]
                given[r] = True
        focal[n:], center[n:] = focal[0], center[0]  # padding: a person with no keypoints
        keypoints_2d, confidence = kp[..., :2], kp[..., 2]
        transl0, start_error = _start_jit(self.kb, pose, betas, transl, given, keypoints_2d, confidence, focal, center)
        result = solver.fit(
            self.kb,
            keypoints_2d,
            confidence,
            solver.Camera(focal, center),
            init=solver.FitInit(pose, betas, transl0),
            config=self.config,
            prior=self.prior,
        )
        vertices = _vertices(self.model, result.betas, result.pose, result.transl)
        out = jax.device_get({**result._asdict(), "start_error_px": start_error, "vertices": vertices})
        out = {k: np.asarray(v)[:n] for k, v in out.items()}  # the padding dropped
        for r, (job, i) in enumerate(rows):
            job.fits[i] = {k: v[r] for k, v in out.items()}
        dt = time.perf_counter() - t0
        self.seconds += dt
        if self.first_batch_seconds is None:
            self.first_batch_seconds = dt


# ---------------------------------------------------------------------------------------------- outputs


def _rounded(values, digits: int = 6) -> list:
    return np.round(np.asarray(values, np.float64), digits).tolist()


def person_record(job: ImageJob, i: int, regressor_run: bool) -> dict[str, Any]:
    """Person i's JSON record (without its .obj path)."""
    person, fit = job.people[i], job.fits[i]
    start = "regressor" if job.starts[i] is not None else "mean"
    rec = {
        "source": person.source,
        "box": list(person.box),
        "keypoints_format": job.formats[i],
        "start": start,
        "pose": _rounded(fit["pose"]),
        "betas": _rounded(fit["betas"]),
        "translation": _rounded(fit["transl"]),
        "keypoints_2d_image_px": _rounded(fit["keypoints_2d"], 3),
        "error_px": float(fit["error_px"]),
        "loss": float(fit["loss"]),
        "reprojection_loss": float(fit["reprojection_loss"]),
        "start_error_px": float(fit["start_error_px"]),
    }
    if regressor_run:
        rec["regressor_error_px"] = float(fit["start_error_px"]) if start == "regressor" else None
    return rec


def draw_overlay(job: ImageJob, faces: np.ndarray) -> np.ndarray:
    """image | fitted people over it | side view (`render.render_people`, as predict draws them), the
    OpenPose keypoints (red) on the image, and both the OpenPose (red) and the fitted keypoints
    (green) on the people."""
    h, w = job.image_hw
    shown = job.shown
    sh, sw = shown.shape[:2]
    kx, ky = sw / w, sh / h
    f, (px, py) = job.camera
    side_hw = inference.side_view_size((sh, sw))
    meshes = [fit["vertices"] for fit in job.fits]
    center = ((px + 0.5) * kx - 0.5, (py + 0.5) * ky - 0.5)
    sheet = render.render_people(meshes, faces, (f * kx, f * ky), center, shown, side_size=side_hw)
    # `render.contact_sheet`'s layout: three cells of the largest panel's size, `pad` around each
    ch, cw = max(sh, side_hw[0]), max(sw, side_hw[1])
    pad = (sheet.shape[1] - 3 * cw) // 4
    if pad < 0 or sheet.shape[:2] != (ch + 2 * pad, 3 * cw + 4 * pad):
        return sheet  # a layout this does not know: the panels without dots

    def to_shown(points):
        return np.stack([(points[..., 0] + 0.5) * kx - 0.5, (points[..., 1] + 0.5) * ky - 0.5], -1)

    radius = max(1.5, max(sh, sw) / 300)
    detected = [np.concatenate([to_shown(kp[:, :2]), kp[:, 2:]], -1) for kp in job.keypoints]
    fitted = [  # where OpenPose has the point: the pairs error_px compares
        np.concatenate([to_shown(fit["keypoints_2d"]), kp[:, 2:] > 0], -1) for fit, kp in zip(job.fits, job.keypoints)
    ]
    for panel, layers in ((0, [(detected, DETECTED_COLOR)]), (1, [(fitted, FITTED_COLOR), (detected, DETECTED_COLOR)])):
        x0 = pad + panel * (cw + pad)
        view = sheet[pad : pad + sh, x0 : x0 + sw]
        for points, color in layers:
            for p in points:
                view = render.draw_keypoints(view, p, radius=radius, color=color)
        sheet[pad : pad + sh, x0 : x0 + sw] = view
    return sheet


def write_outputs(out_dir: str, job: ImageJob, faces: np.ndarray, regressor_run: bool) -> dict[str, Any]:
    """Write <stem>.json, <stem>_<i>.obj per person and <stem>_overlay.png; return the JSON record."""
    h, w = job.image_hw
    f, (px, py) = job.camera
    people = []
    for i in range(len(job.people)):
        rec = person_record(job, i, regressor_run)
        rec["obj"] = os.path.join(out_dir, f"{job.stem}_{i}.obj")
        smpl.save_obj(rec["obj"], job.fits[i]["vertices"], faces)
        people.append(rec)
    png_path = os.path.join(out_dir, f"{job.stem}_overlay.png")
    render.save_png(png_path, draw_overlay(job, faces))
    record = {
        "image": os.path.abspath(job.path),
        "image_size": {"width": int(w), "height": int(h)},
        "camera_image_px": {"focal_length": f, "principal_point": [px, py], "note": "pixel centres at integers"},
        "keypoints": KEYPOINT_SET,
        "people": people,
        **({"skipped_people": job.skipped} if job.skipped else {}),
        **({"notes": job.notes} if job.notes else {}),
        "conventions": CONVENTIONS,
        "overlay": png_path,
    }
    json_path = os.path.join(out_dir, f"{job.stem}.json")
    inference.write_json(json_path, record)
    record["json"] = json_path
    return record


# -------------------------------------------------------------------------------------------- the run


def _check_args(batch_size: int, focal_length: float | None, principal_point) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"--batch-size: expected a positive integer, found {batch_size}")
    if focal_length is not None and not (math.isfinite(focal_length) and focal_length > 0):
        raise ValueError(f"--focal-length: expected a number > 0 (pixels), found {focal_length}")
    if principal_point is not None and not all(math.isfinite(v) for v in principal_point):
        raise ValueError(f"--principal-point: expected finite 'cx,cy', found {principal_point}")


def fit_images(
    images: Sequence[str],
    keypoints: str,
    out_dir: str,
    workdir: str | None = None,
    body_model: str | None = None,
    focal_length: float | None = None,
    principal_point: Sequence[float] | None = None,
    batch_size: int = 32,
    config: objective.FitConfig = objective.FitConfig(),
    prior: prior_lib.PosePrior | None = None,
    prior_path: str | None = None,
    checkpoint: str | int = "best",
    max_megapixels: float = images_lib.DEFAULT_MAX_MEGAPIXELS,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> dict[str, Any]:
    """Fit every person of every image (files or folders) to its OpenPose keypoints (`keypoints`: a
    file or a folder, `people.PeopleFinder`); returns the summary, also written to OUT/fits.json:
    {'done': [image records], 'failed': [{'image', 'error'}], 'people', 'seconds', 'people_per_second'
    (end to end), 'fit_seconds', 'first_batch_seconds' (compilation included), 'fit_people_per_second'
    (the fitting after the first batch), 'fit_config', ...}.

    With `workdir` the fits start from the run's predictions (`inference.predict` into
    OUT/regressor) and use its body model; else from the mean (`body_model`, default the procedural
    one). An image that cannot be used (unreadable, no keypoint file, a malformed one, no person) is
    logged and counted in 'failed'; a bad argument, --out, run directory, body model or prior
    raises ValueError / FileNotFoundError before any image is fitted.
    """
    t0 = time.time()
    _check_args(batch_size, focal_length, principal_point)
    if workdir and body_model:
        raise ValueError("--body-model and --workdir: expected one, found both (a run fits with its own body model)")
    out_dir = inference.check_output_dir(out_dir)
    finder = people_lib.PeopleFinder(keypoints=keypoints)
    if not finder.active:
        raise ValueError("--keypoints: expected an OpenPose JSON file or a folder of them, found none")
    prior_label = os.path.abspath(prior_path) if prior_path else "given" if prior is not None else "default"
    if prior is None:
        prior = prior_lib.load(prior_path) if prior_path else prior_lib.default_prior()
    paths, listing_errors = images_lib.list_images(images)
    failed = [{"image": p, "error": e} for p, e in listing_errors]
    for f in failed:
        log(f"error: {f['image']}: {f['error']}")

    if workdir:
        model_path = workdir_lib.body_model_path(workdir_lib.load_run_config(os.path.abspath(workdir)))
    else:
        model_path = body_model or str(body_model_lib.default_body_model_path())
    model = smpl.load(model_path)
    faces = np.asarray(model.faces)
    fitter = Fitter.create(model, prior, config, batch_size)  # a model without landmarks fails here, first

    starts: dict[str, deque] = {}
    regressor: dict[str, Any] | None = None
    if workdir:
        log(f"start: the predictions of {workdir} (outputs in {os.path.join(out_dir, REGRESSOR_DIR)})")
        reg_summary = inference.predict(
            workdir,
            paths,
            os.path.join(out_dir, REGRESSOR_DIR),
            checkpoint=checkpoint,
            max_megapixels=max_megapixels,
            progress=progress,
            log=log,
            finder=finder,
            focal_length=focal_length,
            principal_point=principal_point,
        )
        starts = regressor_starts(reg_summary)
        regressor = {
            "workdir": reg_summary["workdir"],
            "checkpoint": reg_summary["checkpoint"],
            "summary": os.path.join(out_dir, REGRESSOR_DIR, inference.SUMMARY_NAME),
            "seconds": reg_summary["seconds"],
        }

    done: list[dict[str, Any]] = []
    used: set[str] = {os.path.splitext(SUMMARY_NAME)[0], REGRESSOR_DIR}
    bar = tqdm.tqdm(total=len(paths), disable=not progress or not paths, unit="img", desc="fit", dynamic_ncols=True)
    n_people = 0

    def say(msg):
        (bar.write if not bar.disable else log)(msg)

    def fail(path, error):
        error = str(error).removeprefix(f"{path}: ")
        failed.append({"image": path, "error": error})
        say(f"error: {path}: {error}")
        bar.update(1)

    jobs: deque[ImageJob] = deque()  # images whose people are queued or fitted, not yet written
    queue: deque[tuple[ImageJob, int]] = deque()  # people waiting for a batch

    def run_batch(rows):
        fitter.fit_people(rows)
        while jobs and jobs[0].complete:
            job = jobs.popleft()
            try:
                done.append(write_outputs(out_dir, job, faces, workdir is not None))
            except OSError as e:
                fail(job.path, f"could not write outputs: {e}")
                continue
            bar.update(1)

    for path in paths:
        try:
            image = images_lib.load_image(path, max_megapixels)
            people, kps, formats, skipped = read_people(finder, path)
        except ValueError as e:  # ImageError, PeopleError
            fail(path, e)
            continue
        hw = image.shape[:2]
        job = ImageJob(
            path=path,
            stem=inference.unique_stem(path, used),
            shown=inference.shown_image(image),
            image_hw=hw,
            camera=inference.full_camera(hw, focal_length, principal_point),
            people=people,
            keypoints=kps,
            formats=formats,
            starts=[None] * len(people),
            skipped=skipped,
            fits=[None] * len(people),
        )
        del image
        for why in skipped:
            say(f"note: {path}: person skipped: {why}")
        if workdir:
            predicted = starts.get(os.path.abspath(path))
            by_source = predicted.popleft() if predicted else {}
            job.starts = [by_source.get(p.source) for p in people]
            missing = [p.source for p, s in zip(people, job.starts) if s is None]
            if missing:
                job.notes.append(f"no regressor prediction for {', '.join(missing)}: started from the mean")
                say(f"note: {path}: {job.notes[-1]}")
        jobs.append(job)
        queue.extend((job, i) for i in range(len(people)))
        n_people += len(people)
        bar.set_postfix(people=n_people, refresh=False)
        while len(queue) >= batch_size:
            run_batch([queue.popleft() for _ in range(batch_size)])
    if queue:
        run_batch(list(queue))
        queue.clear()
    bar.close()
    fitted = sum(len(r["people"]) for r in done)
    seconds, first = time.time() - t0, fitter.first_batch_seconds or 0.0
    later = max(0, n_people - batch_size)  # the people fitted after the first (compiling) batch
    summary = {
        "keypoints": os.path.abspath(keypoints),
        "start": "regressor" if workdir else "mean",
        **({"regressor": regressor} if regressor else {}),
        "body_model": os.path.abspath(model_path),
        "prior": prior_label,  # a file, 'given' (an argument) or 'default' (`prior.default_prior`)
        "fit_config": dataclasses.asdict(config),
        "batch_size": batch_size,
        "done": done,
        "failed": failed,
        "people": fitted,
        "seconds": round(seconds, 2),
        "people_per_second": round(fitted / seconds, 2) if seconds > 0 else None,
        "fit_seconds": round(fitter.seconds, 3),
        "first_batch_seconds": round(fitter.first_batch_seconds or 0.0, 3),
        "fit_people_per_second": round(later / (fitter.seconds - first), 1)
        if later and fitter.seconds > first
        else None,
    }
    inference.write_json(os.path.join(out_dir, SUMMARY_NAME), summary)
    return summary

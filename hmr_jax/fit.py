"""Fit SMPL to the OpenPose keypoints of images (SMPLify in JAX, `hmr_jax.fitting`): meshes, overlays.

    python -m hmr_jax.fit --images PATH [PATH ...] --keypoints FILE_OR_DIR --out OUT
        [--workdir=DIR [--checkpoint best|latest|STEP] | --body-model=FILE] [--prior=FILE]
        [--focal-length PX] [--principal-point cx,cy] [--batch-size 32] [--config.KEY=VALUE ...]

PATH is an image file or a folder (its image files, not recursive). --keypoints is OpenPose's JSON:
one file (every image gets its people) or a folder of `<stem>_keypoints.json` (also
`<stem>_openpose.json`, `<stem>.json`) per image, BODY_25 (`pose_keypoints_2d`) or the older COCO-18
(`pose_keypoints`), whose 18 points are put in BODY_25 order with confidence 0 for the points COCO
lacks (mid-hip, big and small toes, heels). Every person is fitted in the full image's pixels with
the full image's camera: focal length `--focal-length`, default 5000 / 256 x max(H, W), principal
point `--principal-point`, default the centre.

The start: with --workdir, the run's predictions, as SPIN does: `hmr_jax.predict` runs first on the
same images and people (its outputs stay in OUT/regressor for comparison) and each person's pose,
betas and translation in the full image's camera start the fit; the body model is the run's. Without
it: the mean pose facing the camera, mean shape, a translation estimated from the keypoints, and
the body model --body-model (an SMPL .pkl / .npz with landmark vertices) or the procedural default.
The pose prior is --prior (SMPLify's gmm_08.pkl or an .npz of `hmr_jax.fitting.prior`), default
the GMM fitted to the synthetic pose generator. Every `FitConfig` field (`hmr_jax.fitting.objective`:
steps, learning rates, optimizer, weights, sigma, the keypoints stage 2 ignores) is a flag
`--config.<field>=<value>` of the field's type (a tuple, a comma-separated list), e.g.
`--config.stage2_steps=200 --config.optimizer=lbfgs`; `--helpfull` lists them with their defaults.

People of all images go through one compiled program in batches of --batch-size (the last padded
with people of no keypoints, dropped after). Per image (<name> its file stem, made unique: a second
'a' becomes 'a_1'; an image named 'fits' becomes 'fits_1'), OUT gets:

  <name>.json          image, image_size, camera_image_px (focal length, principal point) and per
                       person: source (the OpenPose file and person index), box, keypoints_format
                       (BODY_25 | COCO-18), start ('regressor' | 'mean'), pose (72 axis-angle, global
                       orientation in the camera frame), betas (10), translation (metres, the
                       image's camera), keypoints_2d_image_px (the fitted body's 25 BODY_25 points
                       projected), error_px (mean distance to the OpenPose points of confidence > 0),
                       loss, reprojection_loss (SMPLify's stage 2), start_error_px (the same distance
                       for the start) and, with --workdir, regressor_error_px (the regressor's, for
                       people that started from it: what the fit gained);
  <name>_<i>.obj       person i's fitted mesh in the image's camera (OpenCV axes, metres);
  <name>_overlay.png   the image with the OpenPose keypoints (red) | the fitted people over it, with
                       the fitted keypoints (green) and OpenPose's (red) | a side view;

and OUT/fits.json the summary: every image's record or its error, people, seconds and
people_per_second (end to end: reading, compiling, fitting, rendering, writing), fit_seconds (the
fitting alone), first_batch_seconds (compilation included), fit_people_per_second (the fitting
after the first batch), the FitConfig used, the body model, the prior and the start. An image that cannot be used (missing,
unreadable, no keypoint file, a malformed one, a file naming no person) gets a one-line error and
the others go on: the exit status is then 1. A usage error (no --images, a bad flag or config value,
a missing --keypoints, an unwritable --out, a bad run directory, body model or prior) is one line on
stderr and exit status 2.
"""

if __name__ == "__main__":  # before jax loads: glibc reads its malloc tunables at process start
    from hmr_jax import hugepages

    hugepages.ensure()

import dataclasses
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from hmr_jax.fit_images import SUMMARY_NAME, fit_images
from hmr_jax.fitting import objective
from hmr_jax.images import DEFAULT_MAX_MEGAPIXELS, parse_point
from hmr_jax.inference import report_failures

_IMAGES = flags.DEFINE_multi_string("images", [], "Image files or folders (several may follow --images).")
_KEYPOINTS = flags.DEFINE_string(
    "keypoints", None, "OpenPose JSON: a file, or a folder of <stem>_keypoints.json per image.", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Start from this run's predictions (and use its body model).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "--workdir: 'best', 'latest' or a step number.")
_BODY_MODEL = flags.DEFINE_string("body-model", None, "SMPL model file (default: the procedural stand-in).")
_PRIOR = flags.DEFINE_string("prior", None, "Pose prior: SMPLify's gmm_08.pkl or an .npz (default: synthetic).")
_FOCAL = flags.DEFINE_float("focal-length", None, "Full-image focal length in px (default 5000 / 256 x max(H, W)).")
_PP = flags.DEFINE_string("principal-point", None, "Full-image principal point 'cx,cy' px (default: the centre).")
_BATCH = flags.DEFINE_integer("batch-size", 32, "People per compiled fit (the last batch padded).")
_MAX_MP = flags.DEFINE_float("max-megapixels", DEFAULT_MAX_MEGAPIXELS, "Refuse larger images (megapixels).")


def _define_fit_config_flags() -> dict[str, flags.FlagHolder]:
    """One flag per `FitConfig` field, `--config.<field>`, of the field's type and default (a tuple
    field is a comma-separated list)."""
    holders, defaults = {}, objective.FitConfig()
    for field in dataclasses.fields(objective.FitConfig):
        name, default = f"config.{field.name}", getattr(defaults, field.name)
        about = f"FitConfig.{field.name} (hmr_jax.fitting.objective)."
        if isinstance(default, bool):
            holders[field.name] = flags.DEFINE_bool(name, default, about)
        elif isinstance(default, int):
            holders[field.name] = flags.DEFINE_integer(name, default, about)
        elif isinstance(default, float):
            holders[field.name] = flags.DEFINE_float(name, default, about)
        elif isinstance(default, tuple):
            holders[field.name] = flags.DEFINE_list(name, list(default), about)
        else:
            holders[field.name] = flags.DEFINE_string(name, default, about)
    return holders


_FIT_CONFIG = _define_fit_config_flags()


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a flag error (an unknown --config field, a value of the wrong type, a
    missing required flag) as one line on stderr and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    if not flags.FLAGS["verbosity"].present:  # orbax logs several lines per restore
        absl_logging.set_verbosity(absl_logging.WARNING)
    images = list(_IMAGES.value) + list(argv[1:])  # `--images a.jpg b.jpg`: b.jpg arrives as an argument
    if not images:
        print("error: no input: pass --images PATH [PATH ...] (files or folders)", file=sys.stderr)
        sys.exit(2)
    try:
        summary = fit_images(
            images,
            _KEYPOINTS.value,
            _OUT.value,
            workdir=_WORKDIR.value,
            body_model=_BODY_MODEL.value,
            focal_length=_FOCAL.value,
            principal_point=parse_point(_PP.value),
            batch_size=_BATCH.value,
            config=objective.from_config({k: h.value for k, h in _FIT_CONFIG.items()}),
            prior_path=_PRIOR.value,
            checkpoint=_CHECKPOINT.value,
            max_megapixels=_MAX_MP.value,
        )
    except (FileNotFoundError, ValueError) as e:  # ConfigError, ModelFileError, PeopleError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    n_ok, n_bad = len(summary["done"]), len(summary["failed"])
    print(
        f"{n_ok} image(s) done, {n_bad} failed; {summary['people']} people in {summary['seconds']:.1f} s "
        f"({summary['people_per_second']} people/s end to end; fitting {summary['fit_seconds']:.1f} s, "
        f"{summary['first_batch_seconds']:.1f} s of it the first batch with compilation); outputs in "
        f"{os.path.abspath(_OUT.value)} (summary: {SUMMARY_NAME})"
    )
    if report_failures(summary):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

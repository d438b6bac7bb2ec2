"""Turn images into SMPL parameters, meshes and overlays with a trained HMR checkpoint
(`hmr_jax.inference` does the work; its docstring lists what OUT receives: per image
<name>.json / .obj / _overlay.png, and the run summary OUT/predictions.json).

    python -m hmr_jax.predict --workdir=DIR --images PATH [PATH ...] --out OUT
        [--keypoints FILE_OR_DIR | --boxes FILE_OR_DIR [--min-score S] | --bbox x,y,w,h]
        [--focal-length PX] [--principal-point cx,cy] [--checkpoint best|latest|STEP] [--batch-size N]

People: from OpenPose JSON (--keypoints), a boxes / COCO detections JSON (--boxes), one box
(--bbox), or the whole image (`hmr_jax.people` describes the formats).
"""

if __name__ == "__main__":  # before jax loads: glibc reads its malloc tunables at process start
    from hmr_jax import hugepages

    hugepages.ensure()

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from hmr_jax.images import DEFAULT_BBOX_SCALE, DEFAULT_MAX_MEGAPIXELS, parse_bbox, parse_point
from hmr_jax.inference import SUMMARY_NAME, predict, report_failures
from hmr_jax.people import PeopleFinder

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by hmr_jax.train.", required=True)
_IMAGES = flags.DEFINE_multi_string("images", [], "Image files or folders (several may follow --images).")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_BBOX = flags.DEFINE_string("bbox", None, "Person box 'x,y,w,h' in image pixels (default: the whole image).")
_BBOX_SCALE = flags.DEFINE_float("bbox-scale", DEFAULT_BBOX_SCALE, "Crop side = max(w, h) of --bbox times this.")
_KEYPOINTS = flags.DEFINE_string(
    "keypoints", None, "OpenPose JSON: a file (one image) or a folder of <stem>_keypoints.json per image."
)
_BOXES = flags.DEFINE_string("boxes", None, "Boxes JSON (image name -> [[x, y, w, h(, score)]], or COCO detections).")
_MIN_SCORE = flags.DEFINE_float("min-score", 0.5, "--boxes: drop boxes whose score is below this.")
_FOCAL = flags.DEFINE_float("focal-length", None, "Full-image focal length in px (default 5000 / 256 x max(H, W)).")
_PP = flags.DEFINE_string("principal-point", None, "Full-image principal point 'cx,cy' px (default: the centre).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
_BATCH = flags.DEFINE_integer("batch-size", 8, "Images per forward pass (rounded up to a multiple of the devices).")
_MAX_MP = flags.DEFINE_float("max-megapixels", DEFAULT_MAX_MEGAPIXELS, "Refuse larger images (megapixels).")


def main(argv):
    if not flags.FLAGS["verbosity"].present:  # orbax logs several lines per restore
        absl_logging.set_verbosity(absl_logging.WARNING)
    images = list(_IMAGES.value) + list(argv[1:])  # `--images a.jpg b.jpg`: b.jpg arrives as an argument
    if not images:
        print("error: no input: pass --images PATH [PATH ...] (files or folders)", file=sys.stderr)
        sys.exit(2)
    try:
        bbox = parse_bbox(_BBOX.value)
        if bbox is not None and len(images) > 1:
            print(f"note: --bbox {_BBOX.value} is used for every one of the {len(images)} inputs", file=sys.stderr)
        finder = PeopleFinder(keypoints=_KEYPOINTS.value, boxes=_BOXES.value, min_score=_MIN_SCORE.value)
        if finder.active and bbox is not None:
            raise ValueError("--bbox and --keypoints / --boxes: expected one source of people, found both")
        summary = predict(
            _WORKDIR.value,
            images,
            _OUT.value,
            bbox=bbox,
            checkpoint=_CHECKPOINT.value,
            batch_size=_BATCH.value,
            bbox_scale=_BBOX_SCALE.value,
            max_megapixels=_MAX_MP.value,
            finder=finder if finder.active else None,
            focal_length=_FOCAL.value,
            principal_point=parse_point(_PP.value),
        )
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    n_ok, n_bad = len(summary["done"]), len(summary["failed"])
    print(
        f"{n_ok} image(s) done, {n_bad} failed (checkpoint step {summary['checkpoint']['step']}); outputs in "
        f"{os.path.abspath(_OUT.value)} (summary: {SUMMARY_NAME})"
    )
    if report_failures(summary):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)

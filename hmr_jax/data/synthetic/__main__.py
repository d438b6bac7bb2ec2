"""Synthetic training data: the body model rendered in varied poses, shapes, cameras and scenes.

    python -m hmr_jax.data.synthetic --out DIR --num N --seed S [--img-size 256]
        [--body-model PATH] [--workers 2] [--val-fraction 0.1]

Files written: the `hmr_jax.data.synthetic` docstring.
"""

import argparse
import json
import os

from hmr_jax.data.synthetic import samples, writer


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--num", type=int, required=True, help="number of samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--body-model", default=None, help="SMPL .npz/.pkl (default: procedural body)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--frames-per-sequence", type=int, default=samples.FRAMES_PER_SEQUENCE)
    ap.add_argument("--sequences-per-subject", type=int, default=samples.SEQUENCES_PER_SUBJECT)
    ap.add_argument(
        "--yaw-range-deg",
        type=float,
        default=samples.YAW_RANGE_DEG,
        help="start yaw uniform in +- this many degrees (180: all directions)",
    )
    ap.add_argument("--no-preview", action="store_true")
    a = ap.parse_args(argv)
    summary = writer.generate(
        a.out,
        a.num,
        a.seed,
        a.img_size,
        a.body_model,
        a.workers,
        a.val_fraction,
        frames_per_sequence=a.frames_per_sequence,
        sequences_per_subject=a.sequences_per_subject,
        yaw_range_deg=a.yaw_range_deg,
        write_preview=not a.no_preview,
    )
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "num",
                    "train",
                    "validation",
                    "train_subjects",
                    "validation_subjects",
                    "images_per_second",
                    "total_seconds",
                )
            }
        )
    )
    return summary


if __name__ == "__main__":
    main()

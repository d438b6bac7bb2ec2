"""Build the exact SPIN 24-joint regressor (24, V + 24) for config `data.joint_regressor`.

    python tools/make_spin24_regressor.py --j-regressor-extra J_regressor_extra.npy --out J_spin24.npy

The model's 'spin24' joints (`hmr_jax.skeleton.SPIN24_NAMES`) are built as SPIN builds them
(its constants.JOINT_MAP and SMPL wrapper), as one matrix applied to the posed vertices followed
by the 24 posed SMPL kinematic joints (`hmr_jax.smpl.model_joints`):
  10 SMPL kinematic joints (ankles, knees, wrists, elbows, shoulders): one-hot column V + k;
   9 rows of SPIN's J_regressor_extra.npy ((9, V): hips, LSP neck/head top, MPII pelvis/thorax,
     H36M spine/jaw/head): copied into the vertex columns;
   5 face points (nose, eyes, ears; smplx's vertex_ids['smplh']): one-hot vertex columns.
V is --num-vertices (default 6890, SMPL) or that of --smpl-model (.pkl / .npz).
Input: a local file, no downloads.
"""

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# SPIN24 joint name -> SMPL kinematic joint index (hmr_jax.skeleton.SMPL24_NAMES order).
SMPL_JOINTS: Mapping[str, int] = {
    "right_ankle": 8, "right_knee": 5, "left_knee": 4, "left_ankle": 7, "right_wrist": 21,
    "right_elbow": 19, "right_shoulder": 17, "left_shoulder": 16, "left_elbow": 18, "left_wrist": 20,
}  # fmt: skip
# Rows of SPIN's J_regressor_extra.npy, in file order.
EXTRA_ROWS: tuple[str, ...] = (
    "right_hip", "left_hip", "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii",
    "spine_h36m", "jaw_h36m", "head_h36m",
)  # fmt: skip
# SPIN24 joint name -> SMPL vertex index (smplx vertex_ids['smplh']).
VERTEX_IDS: Mapping[str, int] = {
    "nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583,
}  # fmt: skip


def load_extra(path: str | Path, num_vertices: int) -> np.ndarray:
    """Read J_regressor_extra (.npy / .npz, no pickle; `smpl.load_regressor`) and check it is
    (9, num_vertices) and finite."""
    from hmr_jax import smpl

    arr = smpl.load_regressor(path)
    if arr.shape != (len(EXTRA_ROWS), num_vertices):
        raise ValueError(
            f"J_regressor_extra file {path}: expected shape ({len(EXTRA_ROWS)}, {num_vertices}) "
            f"(rows {', '.join(EXTRA_ROWS)}), found {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"J_regressor_extra file {path}: holds non-finite values")
    return arr


def build_regressor(extra: np.ndarray, num_vertices: int) -> np.ndarray:
    """The (24, num_vertices + 24) float32 regressor, rows in `hmr_jax.skeleton.SPIN24_NAMES` order."""
    from hmr_jax import skeleton, smpl

    if extra.shape != (len(EXTRA_ROWS), num_vertices):
        raise ValueError(f"J_regressor_extra: expected shape ({len(EXTRA_ROWS)}, {num_vertices}), found {extra.shape}")
    bad = {name: i for name, i in VERTEX_IDS.items() if not 0 <= i < num_vertices}
    if bad:
        raise ValueError(
            f"face vertex ids {bad} are out of range for a mesh of {num_vertices} vertices "
            f"(SPIN's ids are for the 6890-vertex SMPL mesh)"
        )
    reg = np.zeros((len(skeleton.SPIN24_NAMES), num_vertices + smpl.NUM_JOINTS), np.float32)
    for row, name in enumerate(skeleton.SPIN24_NAMES):
        if name in SMPL_JOINTS:
            reg[row, num_vertices + SMPL_JOINTS[name]] = 1.0
        elif name in VERTEX_IDS:
            reg[row, VERTEX_IDS[name]] = 1.0
        else:
            reg[row, :num_vertices] = extra[EXTRA_ROWS.index(name)]
    return reg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--j-regressor-extra", required=True, help="SPIN's J_regressor_extra.npy, (9, V)")
    parser.add_argument("--out", required=True, help="output .npy for the config's data.joint_regressor")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--num-vertices", type=int, default=6890, help="mesh vertices V (default 6890, SMPL)")
    size.add_argument("--smpl-model", help="take V from this SMPL model file (.pkl or .npz)")
    args = parser.parse_args(argv)
    from hmr_jax import smpl

    num_vertices = args.num_vertices
    if args.smpl_model:
        num_vertices = smpl.load(args.smpl_model).num_vertices
    reg = build_regressor(load_extra(args.j_regressor_extra, num_vertices), num_vertices)
    with open(args.out, "wb") as f:  # exactly args.out (np.save on a name would append .npy)
        np.save(f, reg)
    faces = ", ".join(f"{name}={i}" for name, i in VERTEX_IDS.items())
    print(
        f"wrote {reg.shape} {reg.dtype} SPIN 24-joint regressor to {args.out}: 10 SMPL kinematic joints "
        f"(columns {num_vertices}..{num_vertices + smpl.NUM_JOINTS - 1}), 9 J_regressor_extra rows, "
        f"5 vertices ({faces})"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    main()

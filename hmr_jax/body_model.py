"""Procedural human body model in SMPL's file structure (a stand-in for the licensed SMPL).

The body is built from closed, lofted tubes (torso+neck+head, two arms with hands, two legs,
two feet, two thumbs; `body_parts`), whose proportions follow 10 named body parameters
(`body_params`). The topology never depends on the body parameters, which gives:

- ``v_template``: the mesh at the default parameters (T-pose, SMPL body frame: y up, facing +z,
  subject's left at +x, metres; pelvis joint at y ~ -0.22 and soles at y ~ -1.17 as in SMPL);
- ``shapedirs`` (V, 3, 10): central differences of the generator along 10 named body parameters
  (height, weight, leg length, shoulder width, hip width, belly, arm length, muscularity, head size,
  torso length), one unit = one standard deviation, ordered by vertex variance;
- ``weights`` (V, 24), ``posedirs`` (V, 3, 207) and ``J_regressor`` (24, V): `body_rigging`;
- ``landmark_names`` / ``landmark_vertices``: OpenPose's nose, eyes, ears, toes and heels
  (`skeleton.LANDMARK_NAMES`) as vertices of the rest mesh (`find_landmarks`).

This module makes the arrays, writes them as an .npz (atomically; cached per seed under
``$HMR_JAX_CACHE`` or ``~/.cache/hmr_jax``) and is the CLI:
``python -m hmr_jax.body_model --out body.npz [--seed S] [--png preview.png]``.
"""

import argparse
import os
import pathlib
import tempfile

import numpy as np

from hmr_jax import skeleton
from hmr_jax.body_params import NUM_BETAS, BodyParams, params_from_betas
from hmr_jax.body_parts import Part, assemble, build_parts
from hmr_jax.body_rigging import joint_regressor, pose_correctives, skinning_weights

GENERATOR_VERSION = "procbody-2"


def _base_params(seed: int) -> BodyParams:
    if seed == 0:
        return BodyParams()
    rng = np.random.default_rng(seed)
    return params_from_betas(np.clip(0.3 * rng.standard_normal(NUM_BETAS), -0.6, 0.6))


def _extreme(v: np.ndarray, candidates: np.ndarray, score: np.ndarray) -> int:
    """The candidate vertex of highest score, ties (within 0.1 mm) to the higher one (larger y)."""
    best = score[candidates].max()
    near = candidates[score[candidates] > best - 1e-4]
    return int(near[np.argmax(v[near, 1])])


def _mirror_vertex(v: np.ndarray, i: int) -> int:
    """The vertex at vertex i's mirror image (x -> -x); the body is left-right symmetric."""
    d = np.linalg.norm(v - v[i] * np.array([-1.0, 1.0, 1.0]), axis=1)
    j = int(np.argmin(d))
    if d[j] > 1e-6:
        raise RuntimeError(f"vertex {i} at {v[i]} has no mirror image (nearest: {d[j]:.2e} m away)")
    return j


def find_landmarks(parts: list[Part], v: np.ndarray, joints: np.ndarray, head_scale: float) -> dict[str, int]:
    """OpenPose's face and foot points (`skeleton.LANDMARK_NAMES`) as vertices of the rest mesh `v`.

    Found on the subject's left (+x) side of the torso (which holds the head) and of the left
    foot, then mirrored to the right. The head is the torso above the head joint; the nose is its
    most forward vertex (the nose bump of `body_parts`) on x >= 0: the torso's rings have no
    vertex on x = 0, so it sits one half ring step (~6 mm) left of the midline. The eyes are the
    front head vertices nearest 3.5 cm above the nose and 3.2 cm to either side (scaled with the
    head), the ears the most lateral head vertices (the ear bumps). On a foot, the heel is the
    vertex nearest the back-bottom corner below the heel's pole, the big toe the most forward
    vertex on the inner half of the front, the small toe the most lateral vertex of the front
    fifth of the foot's length.
    """
    by_name = {p.name: p for p in parts}

    def indices(name):
        p = by_name[name]
        return np.arange(p.offset, p.offset + len(p.vertices))

    torso, foot = indices("torso"), indices("left_foot")
    head = torso[v[torso, 1] > joints[15, 1]]
    out = {}
    left = head[v[head, 0] >= 0]
    out["nose"] = _extreme(v, left, v[:, 2])
    eye = np.array([0.032 * head_scale, v[out["nose"], 1] + 0.035 * head_scale])
    front = left[v[left, 2] > 0]
    out["left_eye"] = int(front[np.argmin(np.linalg.norm(v[front, :2] - eye, axis=1))])
    out["left_ear"] = _extreme(v, head, v[:, 0])
    fv = v[foot]
    heel_pole = foot[by_name["left_foot"].ring == -1][0]
    toe_pole = foot[by_name["left_foot"].ring == by_name["left_foot"].ring.max()][0]
    corner = np.array([v[heel_pole, 0], fv[:, 1].min(), fv[:, 2].min()])
    out["left_heel"] = int(foot[np.argmin(np.linalg.norm(fv - corner, axis=1))])
    out["left_big_toe"] = _extreme(v, foot[fv[:, 0] < v[toe_pole, 0]], v[:, 2])
    length = fv[:, 2].max() - fv[:, 2].min()
    out["left_small_toe"] = _extreme(v, foot[fv[:, 2] >= fv[:, 2].max() - 0.2 * length], v[:, 0])
    for name in ("eye", "ear", "big_toe", "small_toe", "heel"):
        out[f"right_{name}"] = _mirror_vertex(v, out[f"left_{name}"])
    return {name: out[name] for name in skeleton.LANDMARK_NAMES}


def make_body_model(seed: int = 0) -> dict[str, np.ndarray]:
    """SMPL-structured arrays of the procedural body (seed 0 = the default body)."""
    base = _base_params(int(seed))
    parts, J = build_parts(base)
    v, f = assemble(parts)
    shapedirs = np.zeros((len(v), 3, NUM_BETAS))
    for k in range(NUM_BETAS):
        e = np.zeros(NUM_BETAS)
        e[k] = 1.0
        vp, _ = assemble(build_parts(params_from_betas(e, base))[0])
        vm, _ = assemble(build_parts(params_from_betas(-e, base))[0])
        shapedirs[:, :, k] = (vp - vm) / 2.0
    W = skinning_weights(parts, J, base.scale)
    posedirs = pose_correctives(v, f, W, J)
    R = joint_regressor(parts, J, len(v))
    landmarks = find_landmarks(parts, v, J, base.scale * base.head_size)
    kintree = np.array([[4294967295 if q < 0 else q for q in skeleton.SMPL24_PARENTS], list(range(24))], dtype=np.int64)
    return {
        "v_template": v.astype(np.float64),
        "f": f.astype(np.int32),
        "weights": W.astype(np.float64),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": R,
        "kintree_table": kintree,
        "joint_names": np.array(skeleton.SMPL24_NAMES),
        "landmark_names": np.array(list(landmarks)),
        "landmark_vertices": np.array(list(landmarks.values()), dtype=np.int64),
        "J": J,
    }


def write_body_model(path, seed: int = 0) -> pathlib.Path:
    """Write the body model of `seed` to `path` (.npz), atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = make_body_model(seed)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def cache_dir() -> pathlib.Path:
    env = os.environ.get("HMR_JAX_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "hmr_jax"


def default_body_model_path(seed: int = 0) -> pathlib.Path:
    """Path of the cached default body model .npz (generated on first use)."""
    path = cache_dir() / f"body_model_{GENERATOR_VERSION}_seed{int(seed)}.npz"
    if not path.exists():
        write_body_model(path, seed)
    return path


def walking_pose() -> np.ndarray:
    """(72,) axis-angle of a walking pose (arms down, one knee bent) for previews (body_preview) and tests."""
    pose = np.zeros((24, 3))
    pose[16] = [0, 0, -1.2]  # left shoulder: arm down
    pose[17] = [0, 0, 1.2]
    pose[18] = [0, -0.6, 0]  # elbows bent forward
    pose[19] = [0, 0.6, 0]
    pose[1] = [-0.5, 0, 0.05]  # left hip forward
    pose[2] = [0.35, 0, -0.05]  # right hip back
    pose[4] = [0.25, 0, 0]
    pose[5] = [1.2, 0, 0]  # right knee bent
    pose[7] = [0.1, 0, 0]
    pose[15] = [0.15, 0.3, 0]
    return pose.reshape(72)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output .npz path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", default=None, help="optional preview PNG path")
    args = ap.parse_args(argv)
    path = write_body_model(args.out, args.seed)
    print(f"wrote {path}")
    if args.png:
        # The preview renders with smpl + render (jax); writing the .npz needs neither.
        from hmr_jax import body_preview  # pylint: disable=g-import-not-at-top

        body_preview.save_preview(path, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()

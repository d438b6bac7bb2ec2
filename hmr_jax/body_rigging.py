"""How the procedural body's mesh follows its skeleton: skinning weights, pose correctives
(``posedirs``) and the joint regressor.

- ``skinning_weights`` (V, 24): smooth weights from the position along each tube's bone chain (at
  most 4 influences per vertex);
- ``pose_correctives`` (V, 3, 207): soft bulges along the normals near hips, knees, shoulders,
  elbows and spine, linear in the diagonal of (R - I) of the bending joint (~5-8 mm at 90 degrees);
- ``joint_regressor`` (24, V): non-negative rows summing to 1 over the vertex rings around each
  joint, solved so that it reproduces the template joints.
"""

import numpy as np
from scipy.optimize import nnls

from hmr_jax import skeleton
from hmr_jax.body_parts import Part


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _chain_weights(t, joints, boundaries, half_widths, n_joints=24):
    """Weights along a chain: joints[k] owns t in (boundaries[k-1], boundaries[k]), with
    smooth blends of the given half widths around each boundary."""
    W = np.zeros((len(t), n_joints))
    keep = np.ones(len(t))
    for k, j in enumerate(joints):
        if k < len(boundaries):
            s = _smoothstep((t - boundaries[k] + half_widths[k]) / (2 * half_widths[k]))
        else:
            s = np.zeros(len(t))
        W[:, j] += keep * (1 - s)
        keep = keep * s
    return W


def skinning_weights(parts: list[Part], J: np.ndarray, scale: float) -> np.ndarray:
    """(V, 24) weights of the assembled parts (at most 4 influences per vertex, rows sum to 1)."""
    out = []
    for part in parts:
        side = part.side
        sid = (lambda j: j) if side >= 0 else (lambda j: j + 1)
        t = part.t
        if part.name == "torso":
            v = part.vertices
            yb = [J[j, 1] for j in (3, 6, 9, 12, 15)]
            W = _chain_weights(v[:, 1], [0, 3, 6, 9, 12, 15], yb, np.array([0.06, 0.045, 0.04, 0.045, 0.035]) * scale)
            ax = np.abs(v[:, 0]) / scale
            y = v[:, 1]
            lr = v[:, 0] >= 0
            # Collars / shoulders over the upper lateral torso.
            up = _smoothstep((y - J[9, 1] + 0.02 * scale) / (0.10 * scale)) * (
                1 - _smoothstep((y - J[12, 1] - 0.00 * scale) / (0.05 * scale))
            )
            wc = 0.85 * up * _smoothstep((ax - 0.03) / 0.09)
            wsh = 0.5 * up * _smoothstep((ax - 0.13) / 0.05)
            lower = 1 - _smoothstep((y - J[1, 1] - 0.02 * scale) / (0.12 * scale))
            whip = 0.55 * lower * _smoothstep((ax - 0.02) / 0.10)
            for wx, jl in ((wc, 13), (wsh, 16), (whip, 1)):
                W *= (1 - wx)[:, None]
                W[lr, jl] += wx[lr]
                W[~lr, jl + 1] += wx[~lr]
        else:
            kn = part.knots
            if "leg" in part.name:
                W = _chain_weights(t, [0, sid(1), sid(4), sid(7)], kn[1:4], np.array([0.06, 0.05, 0.03]) * scale)
            elif "arm" in part.name:
                W = _chain_weights(
                    t,
                    [sid(13), sid(16), sid(18), sid(20), sid(22)],
                    kn[1:5],
                    np.array([0.05, 0.045, 0.03, 0.025]) * scale,
                )
            elif "thumb" in part.name:
                W = _chain_weights(t, [sid(20), sid(22)], [kn[1]], np.array([0.02]) * scale)
            elif "foot" in part.name:
                W = _chain_weights(t, [sid(7), sid(10)], [kn[2]], np.array([0.03]) * scale)
            else:
                raise AssertionError(part.name)
        out.append(W)
    W = np.concatenate(out)
    # Keep at most 4 influences per vertex, renormalise.
    order = np.argsort(-W, axis=1)
    W[np.arange(len(W))[:, None], order[:, 4:]] = 0.0
    return W / W.sum(1, keepdims=True)


def _vertex_normals(v, f):
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# (joint, gaussian sigma m, amplitude m at 90 degrees)
_BULGES = (
    (1, 0.075, 0.008),
    (2, 0.075, 0.008),
    (4, 0.05, 0.007),
    (5, 0.05, 0.007),
    (16, 0.06, 0.007),
    (17, 0.06, 0.007),
    (18, 0.04, 0.005),
    (19, 0.04, 0.005),
    (3, 0.08, 0.004),
    (6, 0.08, 0.004),
    (9, 0.08, 0.004),
    (12, 0.04, 0.003),
)


def pose_correctives(v: np.ndarray, f: np.ndarray, W: np.ndarray, J: np.ndarray) -> np.ndarray:
    """(V, 3, 207) posedirs: _BULGES along the vertex normals of mesh (v, f)."""
    n = _vertex_normals(v, f)
    P = np.zeros((len(v), 3, 207))
    for j, sigma, amp in _BULGES:
        near = W[:, j] + W[:, skeleton.SMPL24_PARENTS[j]] > 0.02
        g = np.exp(-np.sum((v - J[j]) ** 2, 1) / (2 * sigma**2)) * near
        disp = amp * g[:, None] * n  # full bulge at 1 - cos(theta) = 1
        for k in (0, 4, 8):  # -trace(R - I) = 2 (1 - cos theta)
            P[:, :, 9 * (j - 1) + k] = -0.5 * disp
    return P


def _ring_candidates(part, t_joint, n_rings=2):
    """Local vertex indices of the n_rings stations closest (in t) to t_joint."""
    st = np.unique(part.ring[(part.ring >= 0) & (part.ring < part.ring.max())])
    ring_t = np.array([part.t[part.ring == r][0] for r in st])
    pick = st[np.argsort(np.abs(ring_t - t_joint))[:n_rings]]
    return np.nonzero(np.isin(part.ring, pick))[0]


def _solve_convex(points, target, reg=1e-3):
    """Non-negative weights summing to 1 with weights @ points ~= target, close to uniform."""
    k = len(points)
    big = 10.0
    A = np.concatenate([points.T, big * np.ones((1, k)), np.sqrt(reg) * np.eye(k)])
    b = np.concatenate([target, [big], np.full(k, np.sqrt(reg) / k)])
    w, _ = nnls(A, b, maxiter=50 * k)
    return w / w.sum()


def joint_regressor(parts: list[Part], J: np.ndarray, n_verts: int) -> np.ndarray:
    """(24, V) J_regressor of the assembled parts reproducing the joints J."""
    R = np.zeros((24, n_verts))
    by = {p.name: p for p in parts}
    for j in range(24):
        name = skeleton.SMPL24_NAMES[j]
        side = "left" if name.startswith("left") else "right" if name.startswith("right") else ""
        if j in (0, 3, 6, 9, 12, 15):
            part, t_j, sel = by["torso"], J[j, 1], None
        elif j in (1, 2, 13, 14):
            part, t_j, sel = by["torso"], J[j, 1], np.sign(J[j, 0])
        else:
            key = {4: "leg", 5: "leg", 7: "leg", 8: "leg", 10: "foot", 11: "foot"}.get(j, "arm")
            part = by[f"{side}_{key}"]
            kn = part.knots
            idx = {4: 2, 5: 2, 7: 3, 8: 3, 10: 2, 11: 2, 16: 1, 17: 1, 18: 2, 19: 2, 20: 3, 21: 3, 22: 4, 23: 4}[j]
            t_j, sel = kn[idx], None
        cand = _ring_candidates(part, t_j, n_rings=3 if part.name == "torso" else 2)
        if sel is not None:
            cand = cand[np.sign(part.vertices[cand, 0]) == sel]
        w = _solve_convex(part.vertices[cand], J[j])
        R[j, part.offset + cand] = w
    R[R < 1e-6] = 0.0
    return R / R.sum(1, keepdims=True)

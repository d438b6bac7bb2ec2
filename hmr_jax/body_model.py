"""Procedural human body model in SMPL's file structure (a stand-in for the licensed SMPL).

The body is built from closed, lofted tubes (torso+neck+head, two arms with hands, two legs,
two feet, two thumbs). Every tube is a stack of superelliptic cross-sections along a smooth
centreline, capped by a pole vertex at each end, so each part is a closed, outward-oriented
triangle mesh. The topology never depends on the body parameters, which gives:

- ``v_template``: the mesh at the default parameters (T-pose, SMPL body frame: y up, facing +z,
  subject's left at +x, metres; pelvis joint at y ~ -0.22 and soles at y ~ -1.17 as in SMPL);
- ``shapedirs`` (V, 3, 10): central differences of the generator along 10 named body parameters
  (height, weight, leg length, shoulder width, hip width, belly, arm length, muscularity, head size,
  torso length), one unit = one standard deviation, ordered by vertex variance;
- ``weights`` (V, 24): smooth skinning weights from the position along each tube's bone chain;
- ``posedirs`` (V, 3, 207): soft bulges along the normals near hips, knees, shoulders, elbows and
  spine, linear in the diagonal of (R - I) of the bending joint (~5-8 mm at 90 degrees);
- ``J_regressor`` (24, V): non-negative rows summing to 1 over the vertex rings around each joint,
  solved so that it reproduces the template joints.

CLI: ``python -m hmr_jax.body_model --out body.npz [--seed S] [--png preview.png]``.
"""

import argparse
import os
import pathlib
import tempfile
from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import nnls

from hmr_jax import skeleton

GENERATOR_VERSION = "procbody-1"
NUM_BETAS = 10
# What one unit of each beta does (documentation; the signs are tested).
BETA_MEANINGS = (
    "height (+ taller, uniform scale)",
    "weight (+ heavier: girth)",
    "leg length (+ longer)",
    "shoulder width (+ wider)",
    "hip width (+ wider)",
    "belly (+ bigger)",
    "arm length (+ longer)",
    "muscularity (+ thicker limbs and chest)",
    "head size (+ bigger)",
    "torso length (+ longer)",
)


@dataclass(frozen=True)
class BodyParams:
    """Multiplicative body proportions (1.0 = the default body); betas move these."""

    scale: float = 1.0
    girth: float = 1.0
    leg_length: float = 1.0
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    belly: float = 0.0  # metres added to the front of the waist
    arm_length: float = 1.0
    muscle: float = 1.0
    head_size: float = 1.0
    torso_length: float = 1.0


# (field, change per unit beta) in beta order.
_BETA_STEPS = (
    ("scale", 0.055),
    ("girth", 0.10),
    ("leg_length", 0.045),
    ("shoulder_width", 0.06),
    ("hip_width", 0.06),
    ("belly", 0.022),
    ("arm_length", 0.04),
    ("muscle", 0.08),
    ("head_size", 0.05),
    ("torso_length", 0.035),
)


def params_from_betas(betas, base: BodyParams = BodyParams()) -> BodyParams:
    """Body parameters for a (10,) beta vector (linear in betas)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.shape != (NUM_BETAS,):
        raise ValueError(f"betas: expected shape ({NUM_BETAS},), found {betas.shape}")
    changes = {name: getattr(base, name) + step * b for (name, step), b in zip(_BETA_STEPS, betas)}
    return replace(base, **changes)


# ----------------------------------------------------------------------------- joints


def body_joints(p: BodyParams) -> np.ndarray:
    """(24, 3) rest joints of the body with parameters p (before the global scale)."""
    J = np.zeros((24, 3))
    pelvis = np.array([0.0, -0.223, 0.025])
    tl = p.torso_length
    J[0] = pelvis
    J[3] = pelvis + np.array([0.0, 0.118, -0.022]) * tl
    J[6] = J[3] + np.array([0.0, 0.135, 0.025]) * tl
    J[9] = J[6] + np.array([0.0, 0.055, 0.002]) * tl
    J[12] = J[9] + np.array([0.0, 0.212, -0.045]) * tl
    J[15] = J[12] + np.array([0.0, 0.064, 0.055]) * p.head_size
    sw = p.shoulder_width
    J[13] = J[9] + np.array([0.072 * sw, 0.115 * tl, -0.038])
    J[16] = J[13] + np.array([0.098 * sw, 0.032, -0.008])
    al = p.arm_length
    J[18] = J[16] + np.array([0.252, -0.012, -0.016]) * al
    J[20] = J[18] + np.array([0.254, 0.006, -0.005]) * al
    J[22] = J[20] + np.array([0.085, -0.007, -0.008]) * al
    hw = p.hip_width
    ll = p.leg_length
    J[1] = pelvis + np.array([0.069 * hw, -0.091, -0.003])
    J[4] = J[1] + np.array([0.035 * hw, -0.375, -0.006]) * np.array([1.0, ll, 1.0])
    J[7] = J[4] + np.array([-0.016, -0.398, -0.044]) * np.array([1.0, ll, 1.0])
    J[10] = J[7] + np.array([0.031, -0.058, 0.121])
    # Right side mirrors the left.
    for left, right in ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)):
        J[right] = J[left] * np.array([-1.0, 1.0, 1.0])
    return J


# ----------------------------------------------------------------------------- tubes


@dataclass
class _Part:
    name: str
    vertices: np.ndarray  # (n, 3)
    faces: np.ndarray  # (f, 3) local indices
    t: np.ndarray  # (n,) arc-length coordinate of each vertex along the part's axis
    ring: np.ndarray  # (n,) station index (-1 / M for the poles)
    side: int  # +1 left, -1 right, 0 centre


def _superellipse(phi, n):
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / n
    return np.sign(c) * np.abs(c) ** e, np.sign(s) * np.abs(s) ** e


def _tube(name, centre, du, dw, prof, n_around, side, pole_gap=0.004):
    """Closed tube: centre (M,3), cross-section axes du, dw (M,3), profile dict of (M,) arrays
    a (half-size along du), bf / bb (half-size along +dw / -dw), n (superellipse exponent),
    ou / ow (offsets along du / dw). Returns a _Part with poles at both ends."""
    M = centre.shape[0]
    phi = 2 * np.pi * (np.arange(n_around) + 0.5) / n_around
    X, Z = _superellipse(phi[None, :], prof["n"][:, None])  # (M, N)
    b = np.where(Z >= 0, prof["bf"][:, None], prof["bb"][:, None])
    U = prof["a"][:, None] * X + prof["ou"][:, None]
    W = b * Z + prof["ow"][:, None]
    rings = centre[:, None, :] + U[..., None] * du[:, None, :] + W[..., None] * dw[:, None, :]
    t_axis = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(centre, axis=0), axis=1))])
    tan0 = centre[0] - centre[1]
    tan1 = centre[-1] - centre[-2]
    pole0 = centre[0] + pole_gap * tan0 / np.linalg.norm(tan0)
    pole0 = pole0 + prof["ou"][0] * du[0] + prof["ow"][0] * dw[0]
    pole1 = centre[-1] + pole_gap * tan1 / np.linalg.norm(tan1)
    pole1 = pole1 + prof["ou"][-1] * du[-1] + prof["ow"][-1] * dw[-1]
    verts = np.concatenate([rings.reshape(-1, 3), pole0[None], pole1[None]])
    i, j = np.meshgrid(np.arange(M - 1), np.arange(n_around), indexing="ij")
    a_ = i * n_around + j
    b_ = i * n_around + (j + 1) % n_around
    c_ = (i + 1) * n_around + j
    d_ = (i + 1) * n_around + (j + 1) % n_around
    side_faces = np.concatenate([np.stack([a_, b_, d_], -1).reshape(-1, 3), np.stack([a_, d_, c_], -1).reshape(-1, 3)])
    jj = np.arange(n_around)
    s0, s1 = M * n_around, M * n_around + 1
    cap0 = np.stack([np.full(n_around, s0), (jj + 1) % n_around, jj], -1)
    last = (M - 1) * n_around
    cap1 = np.stack([np.full(n_around, s1), last + jj, last + (jj + 1) % n_around], -1)
    faces = np.concatenate([side_faces, cap0, cap1]).astype(np.int64)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    t = np.concatenate([np.repeat(t_axis, n_around), [t_axis[0] - pole_gap, t_axis[-1] + pole_gap]])
    ring = np.concatenate([np.repeat(np.arange(M), n_around), [-1, M]])
    return _Part(name, verts, faces, t, ring, side)


def _signed_volume(verts, faces):
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _profile(keys, t, names=("a", "bf", "bb", "n", "ou", "ow")):
    """PCHIP-interpolate keyframes (list of (t, dict)) at t; bf / bb default to b, n to 2 and
    offsets to 0."""
    kt = np.array([k[0] for k in keys])
    default = {"n": 2.0}
    vals = np.array(
        [
            [k[1].get(nm, k[1].get("b", 0.0) if nm in ("bf", "bb") else default.get(nm, 0.0)) for nm in names]
            for k in keys
        ]
    )
    out = PchipInterpolator(kt, vals, axis=0)(np.clip(t, kt[0], kt[-1]))
    return {nm: out[:, i] for i, nm in enumerate(names)}


def _polyline_centre(points, seg_keys, n_stations, spacing_power=1.0):
    """Smooth centreline through points; keyframe positions given as (segment, fraction) are
    converted to arc length. Returns centre (M,3), tangents (M,3), station t (M,), key t list."""
    seg_len = np.linalg.norm(np.diff(points, axis=0), axis=1)
    knots = np.concatenate([[0.0], np.cumsum(seg_len)])
    curve = PchipInterpolator(knots, points, axis=0)
    t = np.linspace(0.0, knots[-1], n_stations)
    centre = curve(t)
    tangent = curve(t, 1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    key_t = [knots[s] + f * seg_len[min(s, len(seg_len) - 1)] for s, f in seg_keys]
    return centre, tangent, t, knots, key_t


def _frame(tangent, ref):
    """Cross-section axes: dw = ref projected orthogonal to the tangent, du = dw x tangent."""
    dw = ref[None, :] - (tangent @ ref)[:, None] * tangent
    dw /= np.linalg.norm(dw, axis=1, keepdims=True)
    du = np.cross(dw, tangent)
    return du, dw


def _torso(p: BodyParams, J: np.ndarray, n_around=44, n_stations=48) -> _Part:
    g, m = p.girth, p.muscle
    sw, hw = p.shoulder_width, p.hip_width
    yp, yn = J[0, 1], J[12, 1]
    hs = p.head_size
    # Keyframes in "default" y, then mapped: below pelvis fixed, pelvis..neck stretched by torso
    # length, head above the neck joint scaled by head size.
    K = [  # y, a, bf, bb, n, ow(z centre)
        (-0.395, 0.040, 0.035, 0.045, 2.0, -0.005),
        (-0.375, 0.085, 0.055, 0.070, 2.2, -0.005),
        (-0.340, 0.140, 0.082, 0.105, 2.4, -0.008),
        (-0.270, 0.168, 0.098, 0.118, 2.5, -0.008),
        (-0.180, 0.160, 0.100, 0.100, 2.5, -0.002),
        (-0.100, 0.146, 0.100, 0.088, 2.5, 0.002),
        (-0.020, 0.140, 0.098, 0.083, 2.5, 0.004),
        (0.060, 0.150, 0.104, 0.088, 2.5, 0.004),
        (0.140, 0.160, 0.112, 0.095, 2.5, 0.000),
        (0.200, 0.170, 0.098, 0.095, 2.5, -0.012),
        (0.240, 0.158, 0.070, 0.080, 2.6, -0.022),
        (0.272, 0.095, 0.060, 0.064, 2.2, -0.028),
        (0.300, 0.063, 0.058, 0.060, 2.0, -0.024),
        (0.345, 0.060, 0.060, 0.058, 2.0, -0.010),
        (0.380, 0.067, 0.078, 0.072, 2.0, 0.010),
        (0.430, 0.080, 0.094, 0.097, 2.0, 0.012),
        (0.490, 0.083, 0.093, 0.101, 2.0, 0.004),
        (0.535, 0.064, 0.072, 0.080, 2.0, 0.000),
        (0.562, 0.026, 0.030, 0.032, 2.0, 0.000),
    ]
    ky = np.array([k[0] for k in K])
    y_def_pelvis, y_def_neck = -0.223, -0.223 + 0.118 + 0.135 + 0.055 + 0.212
    # Map default y -> this body's y.
    y = ky.copy()
    mid = (ky > y_def_pelvis) & (ky <= y_def_neck)
    y[mid] = yp + (ky[mid] - y_def_pelvis) * (yn - yp) / (y_def_neck - y_def_pelvis)
    top = ky > y_def_neck
    y[top] = yn + (ky[top] - y_def_neck) * hs
    a = np.array([k[1] for k in K])
    bf = np.array([k[2] for k in K])
    bb = np.array([k[3] for k in K])
    head = ky > 0.33
    neck = (ky > 0.26) & ~head
    body = ~head & ~neck
    # Widths: shoulders and hips follow the joint widths; girth and muscle scale the trunk.
    wfac = np.ones_like(ky)
    wfac = np.where(ky > 0.05, 1 + (sw - 1) * np.clip((ky - 0.05) / 0.15, 0, 1), wfac)
    wfac = np.where(ky < -0.10, 1 + (hw - 1) * np.clip((-0.10 - ky) / 0.12, 0, 1), wfac)
    chest = np.exp(-(((ky - 0.14) / 0.08) ** 2))
    trunk = np.where(body, g, np.where(neck, 1 + 0.5 * (g - 1), 1 + 0.15 * (g - 1)))
    a = a * wfac * trunk * (1 + 0.4 * (m - 1) * chest)
    bf = bf * trunk * (1 + 0.6 * (m - 1) * chest)
    bb = bb * trunk
    a[head] *= hs
    bf[head] *= hs
    bb[head] *= hs
    belly = p.belly * np.exp(-(((ky + 0.06) / 0.09) ** 2))
    bf = bf + belly
    keys = [(y[i], dict(a=a[i], bf=bf[i], bb=bb[i], n=K[i][4], ow=K[i][5])) for i in range(len(K))]
    # Stations: denser around the neck/head transition (uniform in y is fine otherwise).
    ts = np.linspace(y[0], y[-1], n_stations)
    prof = _profile(keys, ts)
    centre = np.stack([np.zeros_like(ts), ts, np.zeros_like(ts)], -1)
    du = np.tile([1.0, 0.0, 0.0], (n_stations, 1))
    dw = np.tile([0.0, 0.0, 1.0], (n_stations, 1))
    # centre z follows the ow keyframes (offset), nothing else to do.
    part = _tube("torso", centre, du, dw, prof, n_around, side=0)
    # Face details: nose, brow and ears as soft bumps on the head.
    v = part.vertices
    head_c = np.array([0.0, yn + (0.435 - y_def_neck) * hs, 0.0])
    nose = np.exp(-(((v[:, 1] - head_c[1] + 0.005 * hs) / (0.022 * hs)) ** 2 + (v[:, 0] / (0.016 * hs)) ** 2)) * (
        v[:, 2] > 0
    )
    v[:, 2] += 0.022 * hs * nose
    ears = np.exp(
        -(((v[:, 1] - head_c[1] - 0.005 * hs) / (0.025 * hs)) ** 2 + ((v[:, 2] + 0.005) / (0.018 * hs)) ** 2)
    ) * (np.abs(v[:, 0]) > 0.03)
    v[:, 0] += np.sign(v[:, 0]) * 0.012 * hs * ears
    chin = np.exp(-(((v[:, 1] - head_c[1] + 0.05 * hs) / (0.02 * hs)) ** 2 + (v[:, 0] / (0.03 * hs)) ** 2)) * (
        v[:, 2] > 0
    )
    v[:, 2] += 0.008 * hs * chin
    part.t = part.vertices[:, 1].copy()
    return part


def _leg(p: BodyParams, J: np.ndarray, n_around=24, n_stations=40) -> _Part:
    g, m = p.girth, p.muscle
    hip, knee, ankle = J[1], J[4], J[7]
    top = hip + np.array([-0.012, 0.085, 0.0])
    bottom = ankle + np.array([0.002, -0.030, 0.008])
    pts = np.stack([top, hip, knee, ankle, bottom])
    lg = 1 + 0.9 * (g - 1)
    lm = 1 + 0.9 * (m - 1)
    K = [  # (segment, fraction), a, bf, bb
        ((0, 0.00), 0.040, 0.040, 0.040),
        ((0, 0.60), 0.086, 0.084, 0.090),
        ((1, 0.00), 0.092, 0.090, 0.096),
        ((1, 0.30), 0.078, 0.080, 0.082),
        ((1, 0.75), 0.060, 0.060, 0.058),
        ((2, 0.00), 0.050, 0.050, 0.048),
        ((2, 0.28), 0.053, 0.046, 0.066),
        ((2, 0.75), 0.037, 0.036, 0.036),
        ((3, 0.00), 0.032, 0.034, 0.036),
        ((3, 0.80), 0.026, 0.026, 0.028),
        ((3, 1.00), 0.012, 0.012, 0.012),
    ]
    centre, tan, ts, knots, key_t = _polyline_centre(pts, [k[0] for k in K], n_stations)
    fac = [lg * (lm if 0 < i < 8 else 1.0) if i < 8 else 1 + 0.3 * (g - 1) for i in range(len(K))]
    keys = [
        (key_t[i], dict(a=K[i][1] * fac[i], bf=K[i][2] * fac[i], bb=K[i][3] * fac[i], n=2.0)) for i in range(len(K))
    ]
    prof = _profile(keys, ts)
    du, dw = _frame(tan, np.array([0.0, 0.0, 1.0]))
    part = _tube("left_leg", centre, du, dw, prof, n_around, side=1)
    part.knots = knots
    return part


def _arm(p: BodyParams, J: np.ndarray, n_around=22, n_stations=46) -> _Part:
    g, m = p.girth, p.muscle
    collar, sh, el, wr, hand = J[13], J[16], J[18], J[20], J[22]
    inner = np.array([collar[0] - 0.005, sh[1] - 0.012, sh[2]])
    tip = hand + (hand - wr) / np.linalg.norm(hand - wr) * 0.105 * p.arm_length
    pts = np.stack([inner, sh, el, wr, hand, tip])
    ag = 1 + 0.8 * (g - 1)
    am = 1 + 1.0 * (m - 1)
    K = [  # (segment, fraction), a (vertical), bf, bb (front/back), n, girth-scaled
        ((0, 0.00), 0.030, 0.030, 0.030, 2.0, 1),
        ((0, 0.55), 0.050, 0.052, 0.052, 2.0, 1),
        ((1, 0.05), 0.054, 0.054, 0.054, 2.0, 1),
        ((1, 0.35), 0.048, 0.050, 0.048, 2.0, 1),
        ((1, 0.80), 0.040, 0.042, 0.040, 2.0, 1),
        ((2, 0.00), 0.036, 0.038, 0.038, 2.0, 1),
        ((2, 0.25), 0.040, 0.044, 0.042, 2.0, 1),
        ((2, 0.75), 0.029, 0.034, 0.032, 2.0, 1),
        ((3, 0.00), 0.021, 0.029, 0.029, 2.2, 0),
        ((3, 0.55), 0.017, 0.043, 0.043, 3.0, 0),
        ((4, 0.05), 0.015, 0.044, 0.044, 3.2, 0),
        ((4, 0.55), 0.011, 0.039, 0.039, 3.2, 0),
        ((4, 0.88), 0.009, 0.032, 0.032, 3.0, 0),
        ((4, 1.00), 0.004, 0.014, 0.014, 2.4, 0),
    ]
    centre, tan, ts, knots, key_t = _polyline_centre(pts, [k[0] for k in K], n_stations)
    keys = []
    for i, k in enumerate(K):
        f = ag * (am if k[5] and i < 8 else 1.0) if k[5] else 1 + 0.2 * (g - 1)
        keys.append((key_t[i], dict(a=k[1] * f, bf=k[2] * f, bb=k[3] * f, n=k[4])))
    prof = _profile(keys, ts)
    du, dw = _frame(tan, np.array([0.0, 0.0, 1.0]))  # du ~ vertical, dw ~ forward
    part = _tube("left_arm", centre, du, dw, prof, n_around, side=1)
    part.knots = knots
    return part


def _thumb(p: BodyParams, J: np.ndarray, n_around=10, n_stations=10) -> _Part:
    wr, hand = J[20], J[22]
    d = hand - wr
    base = wr + 0.25 * d + np.array([0.0, -0.004, 0.026])
    mid = wr + 0.62 * d + np.array([0.0, -0.010, 0.060])
    tip = wr + 1.05 * d + np.array([0.0, -0.012, 0.074])
    pts = np.stack([base, mid, tip])
    K = [((0, 0.0), 0.012), ((0, 0.5), 0.013), ((1, 0.2), 0.011), ((1, 0.85), 0.009), ((1, 1.0), 0.004)]
    centre, tan, ts, knots, key_t = _polyline_centre(pts, [k[0] for k in K], n_stations)
    keys = [(key_t[i], dict(a=K[i][1], bf=K[i][1] * 1.1, bb=K[i][1] * 1.1, n=2.0)) for i in range(len(K))]
    prof = _profile(keys, ts)
    du, dw = _frame(tan, np.array([0.0, 1.0, 0.0]))
    part = _tube("left_thumb", centre, du, dw, prof, n_around, side=1)
    part.knots = knots
    return part


def _foot(p: BodyParams, J: np.ndarray, n_around=20, n_stations=16) -> _Part:
    ankle, ball = J[7], J[10]
    sole = ankle[1] - 0.078
    heel = np.array([ankle[0] - 0.004, sole, ankle[2] - 0.060])
    toe = np.array([ball[0] + 0.010, sole, ball[2] + 0.078])
    pts = np.stack([heel, np.array([ankle[0], sole, ankle[2]]), np.array([ball[0], sole, ball[2]]), toe])
    fg = 1 + 0.3 * (p.girth - 1)
    K = [  # (segment, fraction), half-width, height above sole
        ((0, 0.00), 0.020, 0.030),
        ((0, 0.30), 0.030, 0.062),
        ((1, 0.00), 0.036, 0.105),
        ((1, 0.40), 0.040, 0.080),
        ((1, 0.80), 0.046, 0.058),
        ((2, 0.00), 0.048, 0.045),
        ((2, 0.55), 0.042, 0.032),
        ((2, 0.90), 0.030, 0.024),
        ((2, 1.00), 0.016, 0.014),
    ]
    centre, tan, ts, knots, key_t = _polyline_centre(pts, [k[0] for k in K], n_stations)
    keys = [
        (key_t[i], dict(a=K[i][1] * fg, bf=K[i][2] / 2 * fg, bb=K[i][2] / 2 * fg, n=3.0, ow=K[i][2] / 2 * fg))
        for i in range(len(K))
    ]
    prof = _profile(keys, ts)
    du, dw = _frame(tan, np.array([0.0, 1.0, 0.0]))  # dw up, du lateral
    part = _tube("left_foot", centre, du, dw, prof, n_around, side=1)
    part.knots = knots
    return part


def _mirror(part: _Part) -> _Part:
    v = part.vertices * np.array([-1.0, 1.0, 1.0])
    out = _Part(
        part.name.replace("left", "right"), v, part.faces[:, ::-1].copy(), part.t.copy(), part.ring.copy(), -part.side
    )
    out.knots = getattr(part, "knots", None)
    return out


def _build_parts(p: BodyParams):
    J = body_joints(p)
    left = [_leg(p, J), _foot(p, J), _arm(p, J), _thumb(p, J)]
    parts = [_torso(p, J)]
    for part in left:
        parts += [part, _mirror(part)]
    s = p.scale
    for part in parts:
        part.vertices = part.vertices * s
        part.t = part.t * s
        if getattr(part, "knots", None) is not None:
            part.knots = part.knots * s
    return parts, J * s


def _assemble(parts):
    verts, faces, off = [], [], 0
    for part in parts:
        part.offset = off
        verts.append(part.vertices)
        faces.append(part.faces + off)
        off += len(part.vertices)
    return np.concatenate(verts), np.concatenate(faces)


# ----------------------------------------------------------------------------- skinning


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


def _skinning(parts, J, scale):
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


def _posedirs(v, f, W, J):
    n = _vertex_normals(v, f)
    P = np.zeros((len(v), 3, 207))
    for j, sigma, amp in _BULGES:
        near = W[:, j] + W[:, skeleton.SMPL24_PARENTS[j]] > 0.02
        g = np.exp(-np.sum((v - J[j]) ** 2, 1) / (2 * sigma**2)) * near
        disp = amp * g[:, None] * n  # full bulge at 1 - cos(theta) = 1
        for k in (0, 4, 8):  # -trace(R - I) = 2 (1 - cos theta)
            P[:, :, 9 * (j - 1) + k] = -0.5 * disp
    return P


# ----------------------------------------------------------------------------- regressor


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


def _regressor(parts, J, n_verts):
    R = np.zeros((24, n_verts))
    by = {p.name: p for p in parts}
    for j in range(24):
        name = skeleton.SMPL24_NAMES[j]
        side = "left" if name.startswith("left") else "right" if name.startswith("right") else ""
        if j in (0, 3, 6, 9, 12, 15):
            part, t_j, sel = by["torso"], J[j, 1], None
        elif j in (13, 14):
            part, t_j, sel = by["torso"], J[j, 1], np.sign(J[j, 0])
        elif j in (1, 2):
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


# ----------------------------------------------------------------------------- public API


def _base_params(seed: int) -> BodyParams:
    if seed == 0:
        return BodyParams()
    rng = np.random.default_rng(seed)
    return params_from_betas(np.clip(0.3 * rng.standard_normal(NUM_BETAS), -0.6, 0.6))


def make_body_model(seed: int = 0) -> dict[str, np.ndarray]:
    """SMPL-structured arrays of the procedural body (seed 0 = the default body)."""
    base = _base_params(int(seed))
    parts, J = _build_parts(base)
    v, f = _assemble(parts)
    shapedirs = np.zeros((len(v), 3, NUM_BETAS))
    for k in range(NUM_BETAS):
        e = np.zeros(NUM_BETAS)
        e[k] = 1.0
        vp, _ = _assemble(_build_parts(params_from_betas(e, base))[0])
        vm, _ = _assemble(_build_parts(params_from_betas(-e, base))[0])
        shapedirs[:, :, k] = (vp - vm) / 2.0
    W = _skinning(parts, J, base.scale)
    posedirs = _posedirs(v, f, W, J)
    R = _regressor(parts, J, len(v))
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


# ----------------------------------------------------------------------------- preview


def walking_pose() -> np.ndarray:
    """(72,) axis-angle of a walking pose (arms down, one knee bent) for previews and tests."""
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


def preview_image(model: dict, size: int = 400, betas=None, pose=None) -> np.ndarray:
    """Front and side views (T-pose, then `pose`; default walking_pose) as one uint8 image."""
    from hmr_jax import render, smpl

    m = smpl.from_arrays(**model)
    betas = np.zeros(NUM_BETAS) if betas is None else np.asarray(betas)
    pose = walking_pose() if pose is None else np.asarray(pose)
    verts = np.asarray(smpl.forward(m, np.stack([betas, betas]), np.stack([np.zeros(72), pose])).vertices, np.float64)
    flip = np.diag([1.0, -1.0, -1.0])  # body frame -> camera frame
    side = np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # subject's left towards the camera
    dist, focal = 20.0, size * 20.0 / 2.1
    views = []
    for v in verts:
        for rot in (flip, flip @ side):
            cam = (v - np.array([0.0, -0.3, 0.0])) @ rot.T + np.array([0.0, 0.0, dist])
            res = render.render_mesh(
                cam,
                model["f"],
                focal,
                (size / 2, size / 2),
                (size, size),
                background=np.full((size, size, 3), 255, np.uint8),
                color=(0.85, 0.7, 0.6),
                light_dir=(-0.3, 0.4, 1.0),
            )
            views.append(res.image)
    return render.contact_sheet(views, cols=4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output .npz path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", default=None, help="optional preview PNG path")
    args = ap.parse_args(argv)
    path = write_body_model(args.out, args.seed)
    print(f"wrote {path}")
    if args.png:
        from hmr_jax import render

        with np.load(path, allow_pickle=False) as z:
            render.save_png(args.png, preview_image({k: z[k] for k in z.files}))
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()

"""Geometry of the procedural body: closed lofted tubes (torso+neck+head, arms with hands, legs,
feet, thumbs).

Every tube is a stack of superelliptic cross-sections along a smooth centreline, capped by a pole
vertex at each end, so each part is a closed, outward-oriented triangle mesh whose topology never
depends on the body parameters. ``build_parts`` makes the parts of a body (left parts mirrored to
the right) and its joints; ``assemble`` concatenates them into one mesh.
"""

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from hmr_jax.body_params import BodyParams, body_joints


@dataclass
class Part:
    name: str
    vertices: np.ndarray  # (n, 3)
    faces: np.ndarray  # (f, 3) local indices
    t: np.ndarray  # (n,) arc-length coordinate of each vertex along the part's axis
    ring: np.ndarray  # (n,) station index (-1 / M for the poles)
    side: int  # +1 left, -1 right, 0 centre
    knots: np.ndarray | None = None  # arc length of each centreline point (None: the torso)
    offset: int = 0  # index of the part's first vertex in the assembled mesh


def _superellipse(phi, n):
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / n
    return np.sign(c) * np.abs(c) ** e, np.sign(s) * np.abs(s) ** e


def _tube(name, centre, du, dw, prof, n_around, side, pole_gap=0.004):
    """Closed tube: centre (M,3), cross-section axes du, dw (M,3), profile dict of (M,) arrays
    a (half-size along du), bf / bb (half-size along +dw / -dw), n (superellipse exponent),
    ou / ow (offsets along du / dw). Returns a Part with poles at both ends."""
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
    return Part(name, verts, faces, t, ring, side)


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


def _polyline_centre(points, seg_keys, n_stations):
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


def _torso(p: BodyParams, J: np.ndarray, n_around=44, n_stations=48) -> Part:
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


def _leg(p: BodyParams, J: np.ndarray, n_around=24, n_stations=40) -> Part:
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


def _arm(p: BodyParams, J: np.ndarray, n_around=22, n_stations=46) -> Part:
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


def _thumb(p: BodyParams, J: np.ndarray, n_around=10, n_stations=10) -> Part:
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


def _foot(p: BodyParams, J: np.ndarray, n_around=20, n_stations=16) -> Part:
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


def _mirror(part: Part) -> Part:
    v = part.vertices * np.array([-1.0, 1.0, 1.0])
    return Part(
        part.name.replace("left", "right"),
        v,
        part.faces[:, ::-1].copy(),
        part.t.copy(),
        part.ring.copy(),
        -part.side,
        knots=part.knots,
    )


def build_parts(p: BodyParams) -> tuple[list[Part], np.ndarray]:
    """The parts of the body with parameters p and its (24, 3) joints, scaled by p.scale."""
    J = body_joints(p)
    left = [_leg(p, J), _foot(p, J), _arm(p, J), _thumb(p, J)]
    parts = [_torso(p, J)]
    for part in left:
        parts += [part, _mirror(part)]
    s = p.scale
    for part in parts:
        part.vertices = part.vertices * s
        part.t = part.t * s
        if part.knots is not None:
            part.knots = part.knots * s
    return parts, J * s


def assemble(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """One mesh (vertices, faces) of the parts, in order; sets each part's offset."""
    verts, faces, off = [], [], 0
    for part in parts:
        part.offset = off
        verts.append(part.vertices)
        faces.append(part.faces + off)
        off += len(part.vertices)
    return np.concatenate(verts), np.concatenate(faces)

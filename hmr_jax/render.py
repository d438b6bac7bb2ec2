"""Software z-buffer rasteriser and 2D drawing helpers (numpy only; no OpenGL, no display).

Used to render synthetic training images, prediction overlays and image grids.

Conventions
-----------
* Camera frame is OpenCV's: +x right, +y down, +z forward (into the scene); the camera sits at
  the origin. Vertices are projected with ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``.
* Pixel centres are at integer coordinates: pixel ``(row i, col j)`` is the unit square centred
  on ``(x=j, y=i)``. A pixel is covered by a triangle when its centre lies inside the triangle
  (edges inclusive).
* ``depth`` is the camera-frame ``Z`` of the visible surface (not the ray length), interpolated
  perspective-correctly (``1/Z`` is linear in screen space); ``inf`` where nothing was drawn.
* ``light_dir`` is the direction in which the light *travels*, in the camera frame. The default
  ``(0, 0, 1)`` is a headlight: light leaving the camera and travelling into the scene, so
  surfaces facing the camera are brightest. Lighting is two-sided (Lambert with the normal
  flipped towards the viewer), so back faces of open or inside-out meshes never vanish.

Algorithm: project all vertices, cull triangles with a vertex at ``Z <= near``, take each
triangle's integer pixel bounding box, bucket triangles by box size and, per bucket, test every
pixel centre of the bucket's fixed window against all the bucket's triangles in one array
operation. The z-buffer is resolved for all covered samples at once (``np.maximum.at`` on
``1/Z``) and only the winning samples are shaded. No Python loop runs over triangles.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Integer, UInt8

__all__ = [
    "RenderResult",
    "render_mesh",
    "render_people",
    "side_view",
    "overlay",
    "draw_keypoints",
    "draw_box",
    "contact_sheet",
    "save_png",
    "vertex_normals",
]

# Window sizes (pixels) used to bucket triangle bounding boxes along each axis. Finer steps at
# the small end (where most triangles of a body mesh live) keep the wasted samples low.
_WINDOW_SIZES = np.array(
    [
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        16,
        20,
        24,
        32,
        48,
        64,
        96,
        128,
        192,
        256,
        384,
        512,
        768,
        1024,
        1536,
        2048,
        3072,
        4096,
        6144,
        8192,
    ],
    dtype=np.int64,
)
# Most (faces x window samples) evaluated in one array operation (bounds peak memory).
_MAX_SAMPLES_PER_CHUNK = 1 << 20


class RenderResult(NamedTuple):
    """Output of :func:`render_mesh`.

    image: (H, W, 3) uint8, the shaded mesh composited over the background (black if None).
    mask: (H, W) bool, True where the mesh covers the pixel (>= half the sub-samples with SSAA).
    depth: (H, W) float32 camera-frame Z of the nearest surface, inf where ``mask`` is False.
    alpha: (H, W) float32 coverage in [0, 1] (fraction of covered sub-samples; 0/1 without SSAA).
    """

    image: UInt8[np.ndarray, "h w 3"]
    mask: Bool[np.ndarray, "h w"]
    depth: Float[np.ndarray, "h w"]
    alpha: Float[np.ndarray, "h w"]


def _pair(value, name: str) -> tuple[float, float]:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    if arr.size != 2:
        raise ValueError(f"{name}: expected a scalar or a pair (x, y), found shape {np.shape(value)}")
    return float(arr[0]), float(arr[1])


def vertex_normals(vertices: Float[ArrayLike, "v 3"], faces: Integer[ArrayLike, "f 3"]) -> Float[np.ndarray, "v 3"]:
    """Area-weighted unit vertex normals (orientation follows the faces' winding)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # (F, 3), |fn| = 2 * area
    idx = f.reshape(-1)
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, k], 3), minlength=len(v)) for k in range(3)], axis=-1)
    norm = np.linalg.norm(vn, axis=-1, keepdims=True)
    return vn / np.maximum(norm, 1e-12)


def _rasterise(xy: np.ndarray, inv_z: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Rasterise all faces and resolve the z-buffer; one winning sample per covered pixel.

    xy: (V, 2) float64 projected vertices; inv_z: (V,) 1/Z; faces: (F, 3) int64 (already culled).
    Returns pixel flat index (N,), face index into ``faces`` (N,), screen-space barycentrics
    (N, 3) float32 and interpolated 1/Z (N,) float32 for the N covered pixels.
    """
    p = xy[faces]  # (F, 3, 2)
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    # Integer bounding box of pixel centres, clipped to the image.
    xmin = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2)), 0)
    xmax = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2)), width - 1)
    ymin = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2)), 0)
    ymax = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2)), height - 1)
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)  # 2 * signed area
    keep = (xmax >= xmin) & (ymax >= ymin) & (np.abs(denom) > 1e-12)
    keep &= np.isfinite(denom)
    fid = np.nonzero(keep)[0]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
    if fid.size == 0:
        return empty
    x0, y0, x1, y1, x2, y2, denom = (a[fid] for a in (x0, y0, x1, y1, x2, y2, denom))
    xmin, xmax, ymin, ymax = (a[fid].astype(np.int64) for a in (xmin, xmax, ymin, ymax))
    # b0 = a0 * (x - xmin) + c0 * (y - ymin) + k0, same for b1; b2 = 1 - b0 - b1.
    a0 = (y1 - y2) / denom
    c0 = (x2 - x1) / denom
    a1 = (y2 - y0) / denom
    c1 = (x0 - x2) / denom
    k0 = a0 * (xmin - x2) + c0 * (ymin - y2)
    k1 = a1 * (xmin - x2) + c1 * (ymin - y2)
    coef = np.stack([a0, c0, k0, a1, c1, k1], axis=-1).astype(np.float32)  # (F', 6)
    wlim = xmax - xmin
    hlim = ymax - ymin
    iz = inv_z[faces[fid]].astype(np.float32)  # (F', 3)

    sizes = _WINDOW_SIZES
    if max(height, width) > sizes[-1]:
        sizes = np.append(sizes, max(height, width))
    kx = np.searchsorted(sizes, wlim + 1)
    ky = np.searchsorted(sizes, hlim + 1)
    key = kx * len(sizes) + ky
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]

    pix_l, face_l, b0_l, b1_l = [], [], [], []
    for s, e in zip(starts, ends):
        kwin = int(sizes[kx[order[s]]])
        hwin = int(sizes[ky[order[s]]])
        gy, gx = np.divmod(np.arange(kwin * hwin, dtype=np.int64), kwin)
        gxf = gx.astype(np.float32)
        gyf = gy.astype(np.float32)
        step = max(1, _MAX_SAMPLES_PER_CHUNK // (kwin * hwin))
        for cs in range(s, e, step):
            sel = order[cs : min(e, cs + step)]
            c = coef[sel]
            b0 = c[:, 0:1] * gxf + c[:, 1:2] * gyf + c[:, 2:3]  # (n, K)
            b1 = c[:, 3:4] * gxf + c[:, 4:5] * gyf + c[:, 5:6]
            inside = (b0 >= 0) & (b1 >= 0) & (b0 + b1 <= 1)
            if kwin > 1:
                inside &= gx <= wlim[sel, None]
            if hwin > 1:
                inside &= gy <= hlim[sel, None]
            flat = np.flatnonzero(inside)
            if flat.size == 0:
                continue
            fi, si = np.divmod(flat, kwin * hwin)
            f = sel[fi]
            pix_l.append((ymin[f] + gy[si]) * width + xmin[f] + gx[si])
            face_l.append(f)
            b0_l.append(b0.reshape(-1)[flat])
            b1_l.append(b1.reshape(-1)[flat])
    if not pix_l:
        return empty
    pix = np.concatenate(pix_l)
    face = np.concatenate(face_l)
    b0 = np.concatenate(b0_l)
    b1 = np.concatenate(b1_l)
    b2 = 1.0 - b0 - b1
    izf = iz[face]
    s_inv_z = b0 * izf[:, 0] + b1 * izf[:, 1] + b2 * izf[:, 2]  # 1/Z, linear in screen space
    # Z-buffer: nearest = largest 1/Z. One winner per pixel (ties: the last in array order).
    zbuf = np.zeros(height * width, np.float32)
    np.maximum.at(zbuf, pix, s_inv_z)
    win = np.nonzero(s_inv_z == zbuf[pix])[0]
    owner = np.full(height * width, -1, np.int64)
    owner[pix[win]] = win
    win = owner[owner >= 0]
    bary = np.stack([b0[win], b1[win], b2[win]], axis=-1)
    return pix[win], fid[face[win]], bary, s_inv_z[win]


def render_mesh(
    vertices: Float[ArrayLike, "v 3"],
    faces: Integer[ArrayLike, "f 3"],
    focal,
    center,
    image_size: tuple[int, int],
    background: UInt8[ArrayLike, "h w 3"] | None = None,
    color=(0.65, 0.74, 0.86),
    light_dir=(0.0, 0.0, 1.0),
    ambient: float = 0.3,
    *,
    vertex_colors: Float[ArrayLike, "v 3"] | None = None,
    smooth: bool = True,
    ssaa: int = 1,
    near: float = 1e-2,
    cull_backfaces: bool = False,
) -> RenderResult:
    """Rasterise a triangle mesh given in the camera frame (see the module docstring).

    Args:
      vertices: (V, 3) camera-frame positions (metres; +z forward).
      faces: (F, 3) vertex indices.
      focal: scalar or (fx, fy) in pixels. center: (cx, cy) principal point in pixels.
      image_size: (H, W).
      background: (H, W, 3) uint8 image drawn behind the mesh; None -> black (the result's
        ``image`` is then the premultiplied mesh colour, which :func:`overlay` expects).
      color: (3,) base albedo in [0, 1] (ignored when ``vertex_colors`` is given).
      light_dir: (3,) direction the light travels, camera frame (default: from the camera).
      ambient: ambient fraction; intensity = ambient + (1 - ambient) * max(0, -n . l).
      vertex_colors: optional (V, 3) per-vertex albedo in [0, 1], interpolated.
      smooth: per-vertex (Phong-interpolated) normals if True, flat per-face normals if False.
      ssaa: supersampling factor (1 = none; 2 or more for anti-aliased edges).
      near: triangles with any vertex at Z <= near are culled (no clipping).
      cull_backfaces: drop faces whose normal (right-hand rule on the winding, i.e. outward
        for SMPL-style counter-clockwise meshes) points away from the camera. Halves the work
        for closed, consistently wound meshes; leave False for open or unknown meshes.
    Returns:
      RenderResult(image, mask, depth, alpha).
    """
    height, width = (int(s) for s in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size: expected positive (H, W), found {image_size}")
    verts = np.asarray(vertices, dtype=np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3), found {verts.shape}")
    tri = np.asarray(faces)
    if tri.ndim != 2 or tri.shape[1] != 3 or not np.issubdtype(tri.dtype, np.integer):
        raise ValueError(f"faces: expected integer array (F, 3), found {tri.dtype} {tri.shape}")
    tri = tri.astype(np.int64)
    if tri.size and (tri.min() < 0 or tri.max() >= len(verts)):
        raise ValueError(f"faces: indices must lie in [0, {len(verts)}), found [{tri.min()}, {tri.max()}]")
    ssaa = int(ssaa)
    if ssaa < 1:
        raise ValueError(f"ssaa: expected an integer >= 1, found {ssaa}")
    if background is not None:
        background = np.asarray(background)
        if background.shape != (height, width, 3) or background.dtype != np.uint8:
            raise ValueError(
                f"background: expected uint8 ({height}, {width}, 3), found {background.dtype} {background.shape}"
            )
    if vertex_colors is not None:
        albedo = np.asarray(vertex_colors, dtype=np.float32)
        if albedo.shape != verts.shape:
            raise ValueError(f"vertex_colors: expected shape {verts.shape}, found {albedo.shape}")
    else:
        albedo = None
    base = np.asarray(color, dtype=np.float32).reshape(3)
    light = np.asarray(light_dir, dtype=np.float64).reshape(3)
    light = light / max(np.linalg.norm(light), 1e-12)
    fx, fy = _pair(focal, "focal")
    cx, cy = _pair(center, "center")

    # Supersampled grid: sub-pixel centres of pixel j at j + (k + 0.5) / s - 0.5.
    hs, ws = height * ssaa, width * ssaa
    fxs, fys = fx * ssaa, fy * ssaa
    cxs, cys = (cx + 0.5) * ssaa - 0.5, (cy + 0.5) * ssaa - 0.5

    z = verts[:, 2]
    front = z > near
    tri = tri[front[tri].all(axis=1)]
    if cull_backfaces:
        v0 = verts[tri[:, 0]]
        fn = np.cross(verts[tri[:, 1]] - v0, verts[tri[:, 2]] - v0)
        tri = tri[np.einsum("fc,fc->f", fn, v0) < 0]
    safe_z = np.where(front, z, 1.0)
    inv_z = np.where(front, 1.0 / safe_z, 0.0)
    xy = np.stack([fxs * verts[:, 0] * inv_z + cxs, fys * verts[:, 1] * inv_z + cys], axis=-1)
    pix, face, bary, s_inv_z = _rasterise(xy, inv_z, tri, hs, ws)

    # Perspective-correct barycentrics for attribute interpolation.
    tri_w = tri[face]  # (N, 3)
    pc = bary * inv_z[tri_w].astype(np.float32)
    pc /= s_inv_z[:, None]
    if smooth:
        vn = vertex_normals(verts, tri).astype(np.float32)
        n = np.einsum("nk,nkc->nc", pc, vn[tri_w])
    else:
        v = verts[tri_w]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).astype(np.float32)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    # Two-sided: flip normals to face the viewer (view ray r = ((x-cx)/fx, (y-cy)/fy, 1)).
    py, px = np.divmod(pix, ws)
    ray = np.stack([(px - cxs) / fxs, (py - cys) / fys, np.ones_like(px, dtype=np.float64)], axis=-1).astype(np.float32)
    facing = np.einsum("nc,nc->n", n, ray)
    n *= np.where(facing > 0, -1.0, 1.0).astype(np.float32)[:, None]
    diffuse = np.maximum(0.0, -(n @ light.astype(np.float32)))
    intensity = ambient + (1.0 - ambient) * diffuse  # (N,)
    if albedo is not None:
        rgb = np.einsum("nk,nkc->nc", pc, albedo[tri_w])
    else:
        rgb = np.broadcast_to(base, (len(pix), 3))
    rgb = np.clip(rgb * intensity[:, None], 0.0, 1.0)

    cov = np.zeros(hs * ws, np.float32)
    cov[pix] = 1.0
    col = np.zeros((hs * ws, 3), np.float32)
    col[pix] = rgb
    dep = np.full(hs * ws, np.inf, np.float32)
    dep[pix] = 1.0 / s_inv_z
    if ssaa > 1:
        cov = cov.reshape(height, ssaa, width, ssaa).mean(axis=(1, 3))
        col = col.reshape(height, ssaa, width, ssaa, 3).mean(axis=(1, 3))  # premultiplied
        dep = dep.reshape(height, ssaa, width, ssaa).min(axis=(1, 3))
        mask = cov >= 0.5
        dep = np.where(mask, dep, np.inf).astype(np.float32)
    else:
        cov = cov.reshape(height, width)
        col = col.reshape(height, width, 3)
        dep = dep.reshape(height, width)
        mask = cov > 0
    out = col * 255.0
    if background is not None:
        out = out + background.astype(np.float32) * (1.0 - cov[..., None])
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return RenderResult(image=image, mask=mask, depth=dep, alpha=cov.astype(np.float32))


def side_view(
    vertices: Float[ArrayLike, "v 3"],
    faces: Integer[ArrayLike, "f 3"],
    focal,
    center,
    image_size: tuple[int, int],
    angle: float = np.pi / 2,
    **kwargs,
) -> RenderResult:
    """Render the mesh turned by ``angle`` (radians) about the vertical (camera y) axis.

    The turn pivots about the centre of the mesh's bounding box, so a body seen from the
    front at some distance is seen from its side at the same distance. With angle=pi/2 the
    part on the image's right (+x) turns to face the camera. Extra keyword arguments go to
    :func:`render_mesh`.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3), found {v.shape}")
    pivot = (v.max(axis=0) + v.min(axis=0)) / 2 if len(v) else np.zeros(3)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return render_mesh((v - pivot) @ rot.T + pivot, faces, focal, center, image_size, **kwargs)


PERSON_COLORS = ((0.65, 0.74, 0.86), (0.90, 0.70, 0.55), (0.66, 0.86, 0.62), (0.85, 0.62, 0.80), (0.92, 0.88, 0.55))
SIDE_FILL = 0.9  # the side view's people span this share of its panel (width or height)
SIDE_MIN_SHARE = 0.6  # gaps between people shrink until the tallest spans this share of the panel height
SIDE_MIN_GAP = 0.25  # ... but never below this x the tallest's height; each shrunk gap is drawn dashed
SIDE_DISTANCE = 20.0  # the side view's camera: this many times the group's size away (nearly orthographic)
BREAK_COLOR = (150, 150, 150)


def render_people(
    meshes: Sequence[Float[ArrayLike, "v 3"]],
    faces: Integer[ArrayLike, "f 3"],
    focal,
    center,
    image: UInt8[ArrayLike, "h w 3"],
    alpha: float = 0.8,
    side_size: tuple[int, int] | None = None,
) -> UInt8[np.ndarray, "h w2 3"]:
    """Several camera-frame meshes (same `faces`) drawn together: [image | meshes over it | side view].

    All meshes go through one z-buffer (nearer people hide farther ones), each in its colour of
    `PERSON_COLORS`. The side view (a panel of `side_size` (H, W), default the image's) shows the
    group turned by 90 degrees about the vertical axis (`side_layout`: depth runs left to right,
    nearest on the left), framed to fill the panel; where people stand far apart (in depth, or
    one above another) the empty stretch between them is shortened, at a dashed line, so that
    each stays large enough to read.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    sh, sw = side_size if side_size is not None else (h, w)
    faces = np.asarray(faces)
    n_v = len(meshes[0]) if len(meshes) else 0
    verts = np.concatenate([np.asarray(m, np.float64) for m in meshes]) if n_v else np.zeros((0, 3))
    all_faces = np.concatenate([faces + i * n_v for i in range(len(meshes))]) if n_v else faces[:0]
    colors = np.repeat(np.asarray([PERSON_COLORS[i % len(PERSON_COLORS)] for i in range(len(meshes))]), n_v, 0)
    front = render_mesh(verts, all_faces, focal, center, (h, w), vertex_colors=colors, cull_backfaces=True)
    white = np.full((sh, sw, 3), 255, np.uint8)
    if not n_v:
        return contact_sheet([img, img, white], cols=3)
    laid, breaks = side_layout([np.asarray(m, np.float64) for m in meshes], (sh, sw))
    turned = np.concatenate(laid)
    side_focal, side_center = fit_view(turned, (sh, sw))
    background, z = white.copy(), float(np.median(turned[:, 2]))
    for axis, at in breaks:  # dashed lines where the layout shortened a gap
        u = side_focal * at / z + side_center[axis]
        ends = ((u, 0.0), (u, sh - 1.0)) if axis == 0 else ((0.0, u), (sw - 1.0, u))
        background = _dashed_line(background, *ends, BREAK_COLOR)
    side = render_mesh(
        turned,
        all_faces,
        side_focal,
        side_center,
        (sh, sw),
        background=background,
        vertex_colors=colors,
        cull_backfaces=True,
    )
    return contact_sheet([img, overlay(img, front, alpha), side.image], cols=3)


def side_layout(
    meshes: Sequence[Float[np.ndarray, "v 3"]], panel_hw: tuple[int, int]
) -> tuple[list[np.ndarray], list[tuple[int, float]]]:
    """Camera-frame meshes -> (the same meshes as the side view shows them, [(axis, position)] of
    the gaps it shortened).

    The group turns by 90 degrees about the vertical axis through its bounding box's centre (the
    camera's depth becomes the view's x, farther to the right) and moves to `SIDE_DISTANCE` times
    its size in front of the camera (`fit_view` then frames it). People far apart along x (in
    depth: full-frame depths can differ by 2x and more) or along y (one above another) would each
    be left a few pixels tall: the empty stretches between them shrink, all to at most one common
    length, until the layout's aspect lets the tallest span `SIDE_MIN_SHARE` of the panel's
    height, but never below `SIDE_MIN_GAP` x that height. Each shortened stretch is reported by
    its centre (metres from the camera's axis)."""
    pivot = (np.min([m.min(0) for m in meshes], 0) + np.max([m.max(0) for m in meshes], 0)) / 2
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    laid = [(m - pivot) @ rot.T for m in meshes]  # centred on the origin
    tallest = max(float(np.ptp(m[:, 1])) for m in laid) or 1.0
    h, w = panel_hw
    breaks: list[tuple[int, float]] = []
    for axis, target in ((1, 1.0), (0, w / h)):  # y first: the x budget follows the panel's aspect
        target *= SIDE_FILL * tallest / SIDE_MIN_SHARE
        lo = np.array([m[:, axis].min() for m in laid])
        hi = np.array([m[:, axis].max() for m in laid])
        shifts, at = _shorten_gaps(lo, hi, target, SIDE_MIN_GAP * tallest)
        for m, d in zip(laid, shifts):
            m[:, axis] += d
        breaks += [(axis, a) for a in at]
    lo = np.min([m.min(0) for m in laid], 0)
    hi = np.max([m.max(0) for m in laid], 0)
    mid = (lo + hi) / 2
    distance = SIDE_DISTANCE * max(float(np.max(hi - lo)), 1e-6)
    offset = np.array([-mid[0], -mid[1], distance - mid[2]])
    breaks = [(axis, a - mid[axis]) for axis, a in breaks]
    return [m + offset for m in laid], breaks


def _shorten_gaps(lo: np.ndarray, hi: np.ndarray, target: float, min_gap: float) -> tuple[np.ndarray, list[float]]:
    """Intervals [lo_i, hi_i] on a line -> (shift of each, centres of the shortened gaps, after the
    shifts): every empty gap between them is cut to at most one common length c, the largest that
    brings the whole span to `target`, but not below `min_gap`; gaps already shorter stay."""
    order = np.argsort(lo, kind="stable")
    gaps, end = [], -np.inf
    for i in order:  # the empty gaps, in order; end: the farthest hi so far
        gaps.append(max(0.0, lo[i] - end) if np.isfinite(end) else 0.0)
        end = max(end, hi[i])
    gaps = np.asarray(gaps)
    covered = (end - lo[order[0]]) - gaps.sum()
    budget = target - covered
    if gaps.sum() <= budget:
        return np.zeros(len(lo)), []
    c_lo, c_hi = 0.0, float(gaps.max())  # sum(min(gaps, c)) is increasing in c: bisect for the budget
    for _ in range(60):
        c = (c_lo + c_hi) / 2
        c_lo, c_hi = (c, c_hi) if np.minimum(gaps, c).sum() <= budget else (c_lo, c)
    cap = max(c_lo, min_gap)
    shifts, at, total, end = np.zeros(len(lo)), [], 0.0, -np.inf
    for i, g in zip(order, gaps):
        if g > cap:
            at.append(end + total + cap / 2)
            total -= g - cap
        shifts[i] = total
        end = max(end, hi[i])
    return shifts, at


def _dashed_line(image: np.ndarray, p0, p1, color, dash: float = 6.0) -> np.ndarray:
    """A dashed line from p0 to p1 (pixels) drawn over a copy of `image`."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    n = max(1, int(np.linalg.norm(p1 - p0) // (2 * dash)))
    t = np.arange(n + 1) / (n + 0.5)
    starts = p0 + (p1 - p0) * t[:, None]
    stops = p0 + (p1 - p0) * np.minimum(t + 0.5 / (n + 0.5), 1.0)[:, None]
    out = image.copy()
    _draw_lines(out, starts, stops, 1, np.broadcast_to(_as_rgb_u8(color, "color"), (len(starts), 3)))
    return out


def fit_view(
    vertices: Float[ArrayLike, "v 3"], image_size: tuple[int, int], fill: float = SIDE_FILL
) -> tuple[float, tuple[float, float]]:
    """(focal, centre) that show the camera-frame points (all in front of the camera) centred in an
    image of `image_size` (H, W), spanning `fill` of its width or of its height."""
    v = np.asarray(vertices, np.float64)
    h, w = image_size
    xy = v[:, :2] / np.maximum(v[:, 2:3], 1e-6)  # normalised image plane
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-9)
    f = min(fill * w / span[0], fill * h / span[1])
    mid = (lo + hi) / 2
    return f, ((w - 1) / 2.0 - f * mid[0], (h - 1) / 2.0 - f * mid[1])


def overlay(image: UInt8[ArrayLike, "h w 3"], result: RenderResult, alpha: float = 0.7) -> UInt8[np.ndarray, "h w 3"]:
    """Blend a render (made with ``background=None``) over ``image`` with opacity ``alpha``."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.shape != result.image.shape:
        raise ValueError(
            f"image: expected uint8 {result.image.shape} (the render's size), found {img.dtype} {img.shape}"
        )
    a = float(alpha) * result.alpha[..., None]
    out = img.astype(np.float32) * (1.0 - a) + float(alpha) * result.image.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _as_rgb_u8(color, name: str) -> np.ndarray:
    c = np.asarray(color, dtype=np.float64)
    if c.shape[-1:] != (3,):
        raise ValueError(f"{name}: expected RGB triple(s) (..., 3), found shape {c.shape}")
    if c.size and c.max() <= 1.0 and np.issubdtype(np.asarray(color).dtype, np.floating):
        c = c * 255.0  # float colours in [0, 1]
    return np.clip(np.rint(c), 0, 255).astype(np.uint8)


def _stamp_disk(img: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: float, colors: np.ndarray) -> None:
    """Paint filled disks (in place) centred at (cx, cy) with per-disk colours (N, 3)."""
    if cx.size == 0:
        return
    h, w = img.shape[:2]
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (ox**2 + oy**2) <= radius**2 + 1e-9
    ox, oy = ox[disk], oy[disk]
    xs = np.rint(cx)[:, None].astype(np.int64) + ox
    ys = np.rint(cy)[:, None].astype(np.int64) + oy
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    cols = np.broadcast_to(colors[:, None, :], xs.shape + (3,))
    img[ys[ok], xs[ok]] = cols[ok]


def _draw_lines(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, thickness: float, colors: np.ndarray) -> None:
    """Paint line segments p0 -> p1 ((N, 2) each) in place."""
    if len(p0) == 0:
        return
    length = np.linalg.norm(p1 - p0, axis=-1)
    n = int(np.ceil(min(length.max(), 8192.0))) + 1
    t = np.linspace(0.0, 1.0, max(n, 2))
    pts = p0[:, None, :] + (p1 - p0)[:, None, :] * t[None, :, None]  # (N, n, 2)
    cols = np.repeat(colors, pts.shape[1], axis=0)
    pts = pts.reshape(-1, 2)
    _stamp_disk(img, pts[:, 0], pts[:, 1], max(thickness - 1, 0) / 2.0, cols)


def draw_keypoints(
    image: UInt8[ArrayLike, "h w 3"],
    keypoints: Float[ArrayLike, "j c"],
    skeleton=None,
    *,
    parents: Sequence[int] | None = None,
    edges=None,
    radius: float = 2,
    color=(255, 0, 0),
    bone_color=(0, 255, 0),
    thickness: float = 1,
) -> UInt8[np.ndarray, "h w 3"]:
    """Draw keypoints as dots and, optionally, bones; returns a new image.

    Args:
      image: (H, W, 3) uint8 (not modified).
      keypoints: (J, 2) pixel (x, y) or (J, 3) with a visibility column; points whose
        visibility is <= 0 (or non-finite coordinates) are hidden, with their bones.
      skeleton / parents / edges: bones as a parents list of length J (-1 = root) or an (E, 2)
        array of joint-index pairs. ``skeleton`` accepts either form.
      radius: dot radius in pixels. color / bone_color: RGB (0..255 ints or 0..1 floats), one
        for all or one per joint (J, 3) / per bone (E, 3).
      thickness: bone width in pixels.
    """
    img = np.array(image, copy=True)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3), found {img.dtype} {img.shape}")
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise ValueError(f"keypoints: expected shape (J, 2) or (J, 3), found {kp.shape}")
    vis = np.all(np.isfinite(kp[:, :2]), axis=1)
    if kp.shape[1] == 3:
        vis &= kp[:, 2] > 0
    given = [s for s in (skeleton, parents, edges) if s is not None]
    if len(given) > 1:
        raise ValueError("draw_keypoints: pass at most one of skeleton, parents, edges")
    pairs = np.zeros((0, 2), np.int64)
    if given:
        sk = np.asarray(given[0], dtype=np.int64)
        if sk.ndim == 1:
            if len(sk) != len(kp):
                raise ValueError(f"parents: expected length {len(kp)} (one per keypoint), found {len(sk)}")
            child = np.nonzero(sk >= 0)[0]
            pairs = np.stack([sk[child], child], axis=-1)
        elif sk.ndim == 2 and sk.shape[1] == 2:
            pairs = sk
        else:
            raise ValueError(f"skeleton: expected parents (J,) or edges (E, 2), found {sk.shape}")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= len(kp)):
            raise ValueError(f"edges: joint indices must lie in [0, {len(kp)}), found [{pairs.min()}, {pairs.max()}]")
    if len(pairs):
        bc = np.broadcast_to(_as_rgb_u8(bone_color, "bone_color"), (len(pairs), 3))
        ok = vis[pairs[:, 0]] & vis[pairs[:, 1]]
        _draw_lines(img, kp[pairs[ok, 0], :2], kp[pairs[ok, 1], :2], thickness, bc[ok])
    jc = np.broadcast_to(_as_rgb_u8(color, "color"), (len(kp), 3))
    _stamp_disk(img, kp[vis, 0], kp[vis, 1], radius, jc[vis])
    return img


def draw_box(
    image: UInt8[ArrayLike, "h w 3"],
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    color=(255, 255, 0),
    thickness: float = 1,
) -> UInt8[np.ndarray, "h w 3"]:
    """Draw the outline of the axis-aligned box with corners (x0, y0), (x1, y1); new image."""
    img = np.array(image, copy=True)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3), found {img.dtype} {img.shape}")
    c = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    col = np.broadcast_to(_as_rgb_u8(color, "color"), (4, 3))
    _draw_lines(img, c, np.roll(c, -1, axis=0), thickness, col)
    return img


def contact_sheet(
    images: Sequence[UInt8[ArrayLike, "h w 3"]], cols: int, pad: int = 2, pad_value: int = 255
) -> UInt8[np.ndarray, "hh ww 3"]:
    """Tile images row-major into a grid with ``cols`` columns (cells sized to the largest)."""
    if len(images) == 0:
        raise ValueError("contact_sheet: expected at least one image, found none")
    cols = max(1, min(int(cols), len(images)))
    ims = []
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"images[{i}]: expected uint8 (H, W, 3), found {a.dtype} {a.shape}")
        ims.append(a)
    ch = max(a.shape[0] for a in ims)
    cw = max(a.shape[1] for a in ims)
    rows = -(-len(ims) // cols)
    sheet = np.full((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), pad_value, np.uint8)
    for i, a in enumerate(ims):
        r, c = divmod(i, cols)
        y = pad + r * (ch + pad)
        x = pad + c * (cw + pad)
        sheet[y : y + a.shape[0], x : x + a.shape[1]] = a
    return sheet


def save_png(path, image: UInt8[ArrayLike, "h w c"]) -> None:
    """Write a uint8 (H, W), (H, W, 3) or (H, W, 4) image as PNG (parent dirs created)."""
    import pathlib

    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise ValueError(f"{path}: expected a uint8 (H, W[, 1|3|4]) image, found {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(p)

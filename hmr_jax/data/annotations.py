"""Annotation files: SPIN's npz layout (read + write) and 4D-Humans' npz variant (read).

In-memory layout (`Annotations`, N samples, J = 24 joints of the file's `joint_set`):
  imgname (N,) str (relative to the image root), center (N, 2) px (x, y), scale (N,) = box side/200,
  part (N, J, 3) px x, y, visibility; S (N, J, 4) root-centred metres + confidence (as stored),
  pose (N, 72) axis-angle (global orientation first, camera frame), shape (N, 10), has_smpl (N,),
  has_joints_3d (N,) (1 where any S confidence > 0), joint_set ('smpl24' | 'spin24');
  optional (None when absent): gender (N,) str, openpose (N, 25, 3), cam_focal (N, 2),
  cam_center (N, 2), cam_t (N, 3) (camera-frame joint = S[..., :3] + cam_t), subject (N,) str,
  action (N,) str, camera (N,) str, frame (N,) int64 (frame number inside its video),
  sequence (N,) str or int64 (video / sequence id). subject, action, camera and frame default to
  what H36M-style image names carry ('S9_Directions_1.60457274_000001.jpg').

Resampling (`resample_keep`, keep every k-th, k = round(1 / ratio)): with `frame`, every k-th
distinct frame number within each sequence (`sequence`, else the (subject, action, camera) fields
that are present; frames ranked in increasing order, first kept), so the thinning follows time
whatever the row order; without `frame`, every k-th row (row positions p % k == 0).

SPIN files: required keys imgname, center, scale, part; S, pose, shape, has_smpl, openpose,
gender optional as in SPIN (missing S -> zeros and has_joints_3d 0; missing pose/shape -> zeros
and has_smpl 0; pose present without has_smpl -> has_smpl 1). `joint_set` defaults to 'spin24'.

4D-Humans files (`load_4dhumans`), mapping to the layout above:
  scale: stored in PIXELS (4D-Humans divides by 200 when loading), (N,) or (N, 2) (w, h):
         our scale = max over w, h / 200 (4D-Humans crops a square of the larger side too).
  center: (N, 2) or (N, 1, 2) -> (N, 2).
  body_pose: (N, 72) = global_orient (3) + 23 body joints (3 each) (4D-Humans: num_pose =
         3 * (NUM_BODY_JOINTS + 1), global_orient = body_pose[:3]) -> pose as is. A (N, 69) body_pose
         needs `global_orient` (N, 3) axis-angle or (N, 1, 3, 3) / (N, 3, 3) matrix.
  betas (first 10) -> shape; has_smpl = has_body_pose * has_betas (missing -> 0).
  part (spin24) = extra_keypoints_2d (19 = SPIN's first 19 GT joints: ankles ... Head (H36M)) +
         body_keypoints_2d (OpenPose BODY_25) [nose, L eye, R eye, L ear, R ear] = [0, 16, 15, 18, 17].
  S (spin24) from extra_keypoints_3d / body_keypoints_3d the same way (passed through as stored).
  openpose = body_keypoints_2d.
"""

import dataclasses
import os
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

NUM_JOINTS = 24
# Joint sets an annotation file may hold (`skeleton.JOINT_SETS`; h36m17 is the evaluation regressor's).
FILE_JOINT_SETS = ("smpl24", "spin24")
# OpenPose BODY_25 indices of SPIN24 joints 19..23 (nose, left eye, right eye, left ear, right ear).
_OPENPOSE_FACE = (0, 16, 15, 18, 17)

H36M_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
H36M_VAL_SUBJECTS = ("S9", "S11")
_H36M_NAME = re.compile(r"^(S\d+)_(.+)\.(\d+)_(\d+)\.[A-Za-z]+$")

_REQUIRED = ("imgname", "center", "scale", "part")
_OPTIONAL_ARRAYS = {  # name -> trailing shape
    "openpose": (25, 3),
    "cam_focal": (2,),
    "cam_center": (2,),
    "cam_t": (3,),
}
_OPTIONAL_STR = ("gender", "subject", "action", "camera")


@dataclasses.dataclass(frozen=True)
class Annotations:
    """All samples of one annotation file (see module docstring for shapes and units)."""

    imgname: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    part: np.ndarray
    S: np.ndarray
    pose: np.ndarray
    shape: np.ndarray
    has_smpl: np.ndarray
    has_joints_3d: np.ndarray
    joint_set: str = "spin24"
    gender: np.ndarray | None = None
    openpose: np.ndarray | None = None
    cam_focal: np.ndarray | None = None
    cam_center: np.ndarray | None = None
    cam_t: np.ndarray | None = None
    subject: np.ndarray | None = None
    action: np.ndarray | None = None
    camera: np.ndarray | None = None
    frame: np.ndarray | None = None
    sequence: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.imgname)

    @property
    def has_camera(self) -> bool:
        return self.cam_focal is not None

    def select(self, indices: Sequence[int] | np.ndarray) -> "Annotations":
        """Subset (rows `indices`, in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v[idx] if isinstance(v, np.ndarray) else v
        return Annotations(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def _str_array(x, name: str, source: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{source}: {name}: expected shape (N,), found {x.shape}")
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in x.tolist()], dtype=object)


def _int(x, name: str, n: int, source: str) -> np.ndarray:
    """(N,) integers (integer dtype, or floats holding whole numbers) -> int64."""
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{source}: {name}: expected shape {(n,)}, found {x.shape}")
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{source}: {name}: expected integers, found dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.integer):
        whole = np.isfinite(x) & (x == np.round(x))
        if not whole.all():
            i = int(np.nonzero(~whole)[0][0])
            raise ValueError(f"{source}: {name}: expected integers, found {x[i]} at sample {i}")
    return x.astype(np.int64)


def _id_array(x, name: str, n: int, source: str) -> np.ndarray:
    """(N,) ids: integers stay int64, anything else becomes str."""
    x = np.asarray(x)
    if x.dtype != bool and np.issubdtype(x.dtype, np.integer):
        return _int(x, name, n, source)
    out = _str_array(x, name, source)
    if len(out) != n:
        raise ValueError(f"{source}: {name}: expected shape {(n,)}, found {x.shape}")
    return out


def _float(x, name: str, shape: tuple, n: int, source: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise ValueError(f"{source}: {name}: expected a numeric array, found dtype {x.dtype}")
    if x.shape != (n, *shape):
        raise ValueError(f"{source}: {name}: expected shape {(n, *shape)}, found {x.shape}")
    return x.astype(np.float32)


class MissingFieldError(KeyError, ValueError):
    """An annotation file lacks a field it needs. A KeyError (a missing key) and a ValueError (a bad
    input file, as the CLIs report in one line), whose message is the plain sentence."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def from_arrays(arrays: Mapping[str, Any], source: str = "<arrays>") -> Annotations:
    """Validate shapes of a SPIN-layout mapping (npz contents or a dict) and build `Annotations`."""
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise MissingFieldError(
            f"{source}: missing required field(s) {missing}; expected {list(_REQUIRED)}, found {sorted(arrays.keys())}"
        )
    imgname = _str_array(arrays["imgname"], "imgname", source)
    n = len(imgname)
    if n == 0:
        raise ValueError(f"annotation file {source!r}: no rows (0 samples); expected at least one")
    center = np.asarray(arrays["center"])
    if center.ndim == 3 and center.shape[1:] == (1, 2):  # (N, 1, 2) as in some 4D-Humans files
        center = center[:, 0]
    center = _float(center, "center", (2,), n, source)
    scale = np.asarray(arrays["scale"])
    if scale.shape == (n, 1):
        scale = scale[:, 0]
    scale = _float(scale, "scale", (), n, source)
    joint_set = str(np.asarray(arrays["joint_set"]).item()) if "joint_set" in arrays else "spin24"
    if joint_set not in FILE_JOINT_SETS:
        raise ValueError(f"{source}: joint_set: expected one of {FILE_JOINT_SETS}, found {joint_set!r}")
    part = _float(arrays["part"], "part", (NUM_JOINTS, 3), n, source)
    if "S" in arrays:
        S = _float(arrays["S"], "S", (NUM_JOINTS, 4), n, source)
    else:
        S = np.zeros((n, NUM_JOINTS, 4), np.float32)
    has_joints_3d = (S[..., 3] > 0).any(axis=-1).astype(np.float32)
    if "has_joints_3d" in arrays:
        has_joints_3d = _float(arrays["has_joints_3d"], "has_joints_3d", (), n, source)
    has_pose = "pose" in arrays
    pose = _float(arrays["pose"], "pose", (72,), n, source) if has_pose else np.zeros((n, 72), np.float32)
    shape = _float(arrays["shape"], "shape", (10,), n, source) if "shape" in arrays else np.zeros((n, 10), np.float32)
    if "has_smpl" in arrays:
        has_smpl = _float(arrays["has_smpl"], "has_smpl", (), n, source)
    else:
        has_smpl = np.full((n,), 1.0 if has_pose else 0.0, np.float32)
    kw = {}
    for name, trail in _OPTIONAL_ARRAYS.items():
        if name in arrays:
            kw[name] = _float(arrays[name], name, trail, n, source)
    cams = [k for k in ("cam_focal", "cam_center", "cam_t") if k in kw]
    if cams and len(cams) != 3:
        raise MissingFieldError(
            f"{source}: camera fields come together: expected cam_focal, cam_center, cam_t; found only {cams}"
        )
    for name in _OPTIONAL_STR:
        if name in arrays:
            kw[name] = _str_array(arrays[name], name, source)
            if len(kw[name]) != n:
                raise ValueError(f"{source}: {name}: expected shape {(n,)}, found {kw[name].shape}")
    if "frame" in arrays:
        kw["frame"] = _int(arrays["frame"], "frame", n, source)
    if "sequence" in arrays:
        kw["sequence"] = _id_array(arrays["sequence"], "sequence", n, source)
    if not {"subject", "frame"} <= kw.keys():
        parsed = [parse_h36m_name(s) for s in imgname]
        if n and all(p is not None for p in parsed):
            for key in ("subject", "action", "camera"):
                kw.setdefault(key, np.array([p[key] for p in parsed], dtype=object))
            kw.setdefault("frame", np.array([p["frame"] for p in parsed], np.int64))
    return Annotations(
        imgname=imgname,
        center=center,
        scale=scale,
        part=part,
        S=S,
        pose=pose,
        shape=shape,
        has_smpl=has_smpl,
        has_joints_3d=has_joints_3d,
        joint_set=joint_set,
        **kw,
    )


# 4D-Humans stores per-sample dicts (`extra_info`) as a pickled object array: never unpickled.
_4DHUMANS_OBJECT_MEMBERS = ("extra_info",)


def _read_npz(path: str, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every member of an npz but `skip`, read without unpickling anything.

    An object (pickled) member is a ValueError naming the file and the member: a data file never
    runs code. Skipped members are not read at all.
    """
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                if key in skip:
                    continue
                try:
                    arrays[key] = data[key]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise ValueError(
                        f"annotation file {path!r}: member {key!r} is a pickled object array; "
                        "expected numeric or string arrays (pickles are never loaded)"
                    ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"annotation file {path!r}: not a readable .npz (truncated or corrupt?): {e!r}") from None
    return arrays


def load_spin(path: str | os.PathLike) -> Annotations:
    """Read a SPIN-layout npz (see module docstring). Structural problems raise; NaNs do not
    (use `find_invalid` / the pipeline, which counts and skips them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file: expected an .npz at {path!r}, found nothing")
    return from_arrays(_read_npz(path), source=path)


def save_spin(path: str | os.PathLike, annotations: Annotations | Mapping[str, Any]) -> None:
    """Write `annotations` (an `Annotations` or a mapping in SPIN layout) as an npz.

    Validates shapes first; refuses non-finite values (naming the samples). Strings are stored as
    unicode arrays (no pickle), `joint_set` as a 0-d string, `frame` (and integer `sequence`) as
    int64.
    """
    path = os.fspath(path)
    ann = annotations if isinstance(annotations, Annotations) else from_arrays(annotations, path)
    bad = find_invalid(ann)
    if bad:
        first = list(bad.items())[:5]
        raise ValueError(
            f"save_spin({path!r}): expected finite annotations, found {len(bad)} bad "
            f"sample(s), e.g. " + "; ".join(f"#{i} {ann.imgname[i]}: {r}" for i, r in first)
        )
    out = {}
    for k, v in ann.to_dict().items():
        if k == "joint_set":
            out[k] = np.array(v)
        elif v.dtype == object:
            out[k] = v.astype(str)
        else:
            out[k] = v
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, **out)


def _axis_angle_from_matrix(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) -> (N, 3), robust near pi (via the quaternion of largest component)."""
    R = np.asarray(R, np.float64)
    tr = np.trace(R, axis1=-2, axis2=-1)
    q = np.stack([1 + tr, 1 + 2 * R[:, 0, 0] - tr, 1 + 2 * R[:, 1, 1] - tr, 1 + 2 * R[:, 2, 2] - tr], -1)
    k = np.argmax(q, axis=-1)
    quat = np.zeros((len(R), 4))
    for i, (Ri, ki) in enumerate(zip(R, k)):
        s = np.sqrt(max(q[i, ki], 1e-12))
        w, x, y, z = [
            (s, (Ri[2, 1] - Ri[1, 2]) / s, (Ri[0, 2] - Ri[2, 0]) / s, (Ri[1, 0] - Ri[0, 1]) / s),
            ((Ri[2, 1] - Ri[1, 2]) / s, s, (Ri[0, 1] + Ri[1, 0]) / s, (Ri[0, 2] + Ri[2, 0]) / s),
            ((Ri[0, 2] - Ri[2, 0]) / s, (Ri[0, 1] + Ri[1, 0]) / s, s, (Ri[1, 2] + Ri[2, 1]) / s),
            ((Ri[1, 0] - Ri[0, 1]) / s, (Ri[0, 2] + Ri[2, 0]) / s, (Ri[1, 2] + Ri[2, 1]) / s, s),
        ][ki]
        quat[i] = np.array([w, x, y, z]) / 2
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    quat *= np.where(quat[:, :1] < 0, -1, 1)
    sin_half = np.linalg.norm(quat[:, 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(sin_half, quat[:, :1])
    return (quat[:, 1:] * np.where(sin_half > 1e-9, angle / np.maximum(sin_half, 1e-12), 2.0)).astype(np.float32)


def mean_smpl(pose: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean SMPL parameters of N labelled samples: pose (N, 72) axis-angle, shape (N, K) ->
    ((24, 3, 3) per joint the rotation nearest the mean rotation matrix (SVD projection), (K,) mean
    betas). The 'mean pose and shape' of the trainer's baseline and the regressor's start."""
    pose = np.asarray(pose, np.float64).reshape(-1, 24, 3)
    if len(pose) == 0:
        raise ValueError("mean_smpl: no samples")
    rot = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(-1, 24, 3, 3)
    u, _, vt = np.linalg.svd(rot.mean(axis=0))  # (24, 3, 3)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, -1] *= d[:, None]
    return (u @ vt).astype(np.float32), np.asarray(shape, np.float64).mean(axis=0).astype(np.float32)


def mean_smpl_axis_angle(pose: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`mean_smpl` with the pose as (72,) axis-angle."""
    rot, betas = mean_smpl(pose, shape)
    return _axis_angle_from_matrix(rot).reshape(72), betas


def from_4dhumans_arrays(d: Mapping[str, Any], source: str = "<arrays>") -> Annotations:
    """Map 4D-Humans' npz keys to the SPIN layout (see module docstring)."""
    for k in ("imgname", "center", "scale"):
        if k not in d:
            raise MissingFieldError(f"{source}: 4D-Humans file: missing required field {k!r}; found {sorted(d)}")
    imgname = np.asarray(d["imgname"])
    n = len(imgname)
    center = np.asarray(d["center"], np.float32).reshape(n, -1)
    if center.shape != (n, 2):
        raise ValueError(f"{source}: center: expected (N, 2) or (N, 1, 2), found {np.shape(d['center'])}")
    scale_px = np.asarray(d["scale"], np.float32).reshape(n, -1)
    if scale_px.shape[1] not in (1, 2):
        raise ValueError(f"{source}: scale: expected (N,), (N, 1) or (N, 2) pixels, found {np.shape(d['scale'])}")
    out: dict[str, Any] = {
        "imgname": imgname,
        "center": center,
        "scale": scale_px.max(axis=1) / 200.0,
        "joint_set": "spin24",
    }

    def kp(body_key, extra_key, dim):
        body = np.asarray(d[body_key], np.float32) if body_key in d else np.zeros((n, 25, dim), np.float32)
        extra = np.asarray(d[extra_key], np.float32) if extra_key in d else np.zeros((n, 19, dim), np.float32)
        if body.shape != (n, 25, dim) or extra.shape != (n, 19, dim):
            raise ValueError(
                f"{source}: {body_key}/{extra_key}: expected {(n, 25, dim)} and "
                f"{(n, 19, dim)}, found {body.shape} and {extra.shape}"
            )
        return np.concatenate([extra, body[:, list(_OPENPOSE_FACE)]], axis=1), body

    out["part"], out["openpose"] = kp("body_keypoints_2d", "extra_keypoints_2d", 3)
    if "body_keypoints_3d" in d or "extra_keypoints_3d" in d:
        out["S"], _ = kp("body_keypoints_3d", "extra_keypoints_3d", 4)
    if "body_pose" in d:
        bp = np.asarray(d["body_pose"], np.float32).reshape(n, -1)
        if bp.shape[1] == 69:
            if "global_orient" not in d:
                raise MissingFieldError(
                    f"{source}: body_pose has 69 values (no global orientation) and no global_orient field"
                )
            go = np.asarray(d["global_orient"], np.float32)
            go = _axis_angle_from_matrix(go.reshape(n, 3, 3)) if go.size == 9 * n else go.reshape(n, 3)
            bp = np.concatenate([go, bp], axis=1)
        if bp.shape[1] != 72:
            raise ValueError(f"{source}: body_pose: expected (N, 72) or (N, 69), found {bp.shape}")
        out["pose"] = bp
        has_pose = np.asarray(d.get("has_body_pose", np.ones(n)), np.float32).reshape(n)
    else:
        has_pose = np.zeros(n, np.float32)
    if "betas" in d:
        out["shape"] = np.asarray(d["betas"], np.float32).reshape(n, -1)[:, :10]
        has_betas = np.asarray(d.get("has_betas", np.ones(n)), np.float32).reshape(n)
    else:
        has_betas = np.zeros(n, np.float32)
    out["has_smpl"] = has_pose * has_betas
    for k in ("gender",):
        if k in d:
            out[k] = d[k]
    return from_arrays(out, source=source)


def load_4dhumans(path: str | os.PathLike) -> Annotations:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file: expected an .npz at {path!r}, found nothing")
    return from_4dhumans_arrays(_read_npz(path, skip=_4DHUMANS_OBJECT_MEMBERS), source=path)


def load(path: str | os.PathLike) -> Annotations:
    """SPIN or 4D-Humans npz, detected from its keys."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file: expected an .npz at {path!r}, found nothing")
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
    if "part" not in keys and keys & {"body_keypoints_2d", "extra_keypoints_2d", "body_pose"}:
        return load_4dhumans(path)
    return load_spin(path)


def parse_h36m_name(imgname: str) -> dict[str, Any] | None:
    """'images/S9_Directions_1.60457274_000001.jpg' -> {subject: 'S9', action: 'Directions_1',
    camera: '60457274', frame: 1}; None if the name is not H36M-style."""
    m = _H36M_NAME.match(os.path.basename(str(imgname)))
    if m is None:
        return None
    return {"subject": m.group(1), "action": m.group(2), "camera": m.group(3), "frame": int(m.group(4))}


def find_invalid(ann: Annotations, image_sizes: np.ndarray | None = None) -> dict[int, str]:
    """Samples whose annotations cannot be used: non-finite values, scale <= 0, or (given
    `image_sizes` (N, 2) (height, width)) a box entirely outside its image. {index: reason}."""
    bad: dict[int, str] = {}
    for name in ("center", "scale", "part", "S", "pose", "shape", "has_smpl", "cam_focal", "cam_center", "cam_t"):
        v = getattr(ann, name)
        if v is None:
            continue
        flat = v.reshape(len(ann), -1)
        for i in np.nonzero(~np.isfinite(flat).all(axis=1))[0]:
            bad.setdefault(int(i), f"non-finite {name}")
    for i in np.nonzero(~(ann.scale > 0))[0]:
        bad.setdefault(int(i), f"scale must be > 0, found {ann.scale[i]}")
    if image_sizes is not None:
        half = 100.0 * ann.scale
        h, w = image_sizes[:, 0], image_sizes[:, 1]
        outside = (
            (ann.center[:, 0] + half < 0)
            | (ann.center[:, 0] - half > w)
            | (ann.center[:, 1] + half < 0)
            | (ann.center[:, 1] - half > h)
        )
        for i in np.nonzero(outside)[0]:
            bad.setdefault(int(i), f"box outside the image ({int(w[i])}x{int(h[i])})")
    return dict(sorted(bad.items()))


def find_missing_images(ann: Annotations, image_root: str | os.PathLike) -> dict[int, str]:
    root = os.fspath(image_root)
    return {
        i: f"missing image {os.path.join(root, n)}"
        for i, n in enumerate(ann.imgname)
        if not os.path.isfile(os.path.join(root, n))
    }


def split_indices(
    ann: Annotations,
    split: str,
    *,
    val_fraction: float = 0.1,
    train_subjects: Sequence[str] = H36M_TRAIN_SUBJECTS,
    val_subjects: Sequence[str] = H36M_VAL_SUBJECTS,
) -> np.ndarray:
    """Row indices of `split` ('train' | 'validation') of one annotation file.

    With H36M subjects (a `subject` field of 'S<k>' / ints, or H36M-style image names): the H36M
    protocol (S1, S5, S6, S7, S8 train; S9, S11 validation; other subjects belong to neither, with a
    warning). With other subject names: subject-disjoint, the last round(val_fraction * #subjects)
    subjects in sorted order (at least one when val_fraction > 0) are validation. Without subjects:
    the LAST `val_fraction` of rows (contiguous, so frames of one video do not leak across splits).
    A file that already holds one split is read whole (FolderSource(split=None)).
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split: expected 'train' or 'validation', found {split!r}")
    n = len(ann)
    if ann.subject is not None:
        raw = [str(s) for s in ann.subject]
        if all(re.fullmatch(r"S?\d+", s) for s in raw):
            subj = np.asarray([s if s.startswith("S") else f"S{s}" for s in raw])
            tr, va = np.isin(subj, list(train_subjects)), np.isin(subj, list(val_subjects))
            other = sorted(set(subj[~(tr | va)].tolist()))
            if other:
                warnings.warn(
                    f"split_indices: subjects {other} are in neither train "
                    f"{list(train_subjects)} nor validation {list(val_subjects)}; left out"
                )
            return np.nonzero(tr if split == "train" else va)[0]
        names = sorted(set(raw))
        n_val = int(round(len(names) * val_fraction))
        n_val = max(n_val, 1 if val_fraction > 0 and len(names) > 1 else 0)
        va = np.isin(np.asarray(raw), names[len(names) - n_val :])
        return np.nonzero(~va if split == "train" else va)[0]
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected in [0, 1), found {val_fraction}")
    n_val = int(round(n * val_fraction))
    return np.arange(0, n - n_val) if split == "train" else np.arange(n - n_val, n)


def resample_mask(positions: np.ndarray, ratio: float) -> np.ndarray:
    """Keep every k-th sample, k = round(1 / ratio) (0.5 -> every 2nd, 0.2 -> every 5th).
    `positions` are row positions or `resample_rank`s."""
    return np.asarray(positions) % resample_step(ratio) == 0


def sequence_ids(ann: Annotations) -> np.ndarray | None:
    """(N,) int64 id of each sample's sequence: `sequence`, else the (subject, action, camera)
    fields present; None when there are none (all one sequence)."""
    keys = (
        [ann.sequence]
        if ann.sequence is not None
        else [v for v in (ann.subject, ann.action, ann.camera) if v is not None]
    )
    if not keys:
        return None
    codes = np.stack(
        [np.unique(np.asarray(k).astype(str), return_inverse=True)[1].reshape(len(ann)) for k in keys], axis=1
    )  # (N, #keys)
    return np.unique(codes, axis=0, return_inverse=True)[1].astype(np.int64).reshape(len(ann))


def resample_rank(ann: Annotations) -> np.ndarray:
    """(N,) int64 that resampling thins (keep rank % k == 0): with `frame`, the rank of the
    sample's frame number among the distinct frame numbers of its sequence (0 = earliest); without,
    the row position."""
    n = len(ann)
    if ann.frame is None:
        return np.arange(n, dtype=np.int64)
    seq = sequence_ids(ann)
    seq = np.zeros(n, np.int64) if seq is None else seq
    pairs, inverse = np.unique(np.stack([seq, ann.frame], axis=1), axis=0, return_inverse=True)
    first = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")  # pairs sorted by (seq, frame)
    return (np.arange(len(pairs)) - first)[inverse.reshape(n)].astype(np.int64)


def resample_keep(ann: Annotations, ratio: float) -> np.ndarray:
    """(N,) bool: the samples resampling at `ratio` keeps (module docstring)."""
    return resample_mask(resample_rank(ann), ratio)


def resample_step(ratio: float) -> int:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"resample ratio: expected in (0, 1], found {ratio}")
    return max(1, int(round(1.0 / ratio)))

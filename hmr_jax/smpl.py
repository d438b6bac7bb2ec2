"""SMPL body model: safe loading and a fast linear-blend-skinning forward pass (numpy + jax).

    from hmr_jax import smpl
    model = smpl.load("SMPL_NEUTRAL.pkl")        # or .npz; an immutable pytree
    out = smpl.forward(model, betas, pose)       # pose: (..., 72) axis-angle or (..., 24, 3, 3)
    out.vertices, out.joints                     # (..., V, 3), (..., 24, 3), metres

Official SMPL ``.pkl`` files are Python-2 pickles holding chumpy objects and scipy sparse
matrices. A pickle can run arbitrary code, so they are read by a restricted unpickler whose
allowlist holds only numpy array reconstruction, scipy sparse matrices (turned into dense
arrays), stand-ins for chumpy's array objects and a few harmless builtins. Anything else
(``os.system``, ``builtins.eval``, ...) is refused by name before it can run. chumpy itself is
never needed.
"""

import codecs
import copyreg
import dataclasses
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import geometry, skeleton

NUM_JOINTS = len(skeleton.SMPL24_NAMES)  # 24
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207

_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SMPLModel:
    """SMPL arrays laid out for fast contraction (note: not the file layout).

    v_template (V, 3); shapedirs (K, 3, V); posedirs (207, 3, V) (vertex index innermost, so
    the blend shapes and skinning vectorise along vertices); J_regressor (24, V);
    joint_template (24, 3) = J_regressor @ v_template; joint_shapedirs (K, 24, 3) = J_regressor
    applied to each shape direction (joints of the shaped body are linear in betas, so the
    (24, V) regression never runs per body); weights (V, 24); faces (F, 3) int32.
    `parents` and `joint_names` are static (part of the tree structure), so the kinematic
    chain unrolls at trace time.
    """

    v_template: Array
    shapedirs: Array
    posedirs: Array
    J_regressor: Array
    joint_template: Array
    joint_shapedirs: Array
    weights: Array
    faces: Array
    parents: tuple = dataclasses.field(default=skeleton.SMPL24_PARENTS, metadata=dict(static=True))
    joint_names: tuple = dataclasses.field(default=skeleton.SMPL24_NAMES, metadata=dict(static=True))

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[0]


class SMPLOutput(NamedTuple):
    vertices: Array  # (..., V, 3)
    joints: Array  # (..., 24, 3)


# ----------------------------------------------------------------------------- loading

# What a model file may declare, checked before anything is allocated, decompressed or read.
# Generous next to real bodies (SMPL: 6,890 vertices, 13,776 faces, 10 or 300 shape directions;
# SMPL-X: 10,475 / 20,908 / 400; the subdivided "hi-res" SMPL: 27,554 vertices), yet together
# they cap what a corrupt or hostile file can make `load` allocate at about a gigabyte.
MAX_VERTICES = 50_000
MAX_FACES = 4 * MAX_VERTICES  # a closed triangle mesh has about 2 faces per vertex
MAX_SHAPE_DIRS = 512
MAX_REGRESSOR_JOINTS = 1_024
MAX_ARRAY_BYTES = MAX_VERTICES * 3 * MAX_SHAPE_DIRS * 8  # shapedirs at the limits in float64: ~614 MB
MAX_MODEL_BYTES = 1 << 30  # all the arrays a model is built from, together
MAX_PKL_BYTES = 1 << 30  # a .pkl is read whole
_MAX_ZIP_MEMBERS = 1_024
_MAX_ZIP_DIRECTORY_BYTES = 4 << 20
_MAX_NPY_HEADER = 10_000
_MAX_NESTING = 16  # chumpy objects inside chumpy objects
_READ_CHUNK = 16 << 20
_ROOT_PARENTS = (-1, 2**32 - 1, 2**64 - 1)  # kintree_table's "no parent": -1 as int, uint32 or uint64
_OPTIONAL_KEYS = ("joint_names",)
_INTEGER_KEYS = ("f", "kintree_table")


class ModelFileError(ValueError):
    """A body-model or joint-regressor file that cannot be used; the message names the file and why."""


class ModelFileNotFoundError(FileNotFoundError, ModelFileError):
    """The model or regressor file does not exist (both a FileNotFoundError and a ValueError)."""


class _ChumpyStandIn:
    """Receives the pickled state of a chumpy object (Ch, Select, ...) without chumpy."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self, depth: int = 0) -> np.ndarray:
        s = self.state
        if "x" in s:
            return _ndarray(s["x"], depth)
        if "a" in s and "idxs" in s:  # chumpy.reordering.Select-style
            arr = _ndarray(s["a"], depth).ravel()[_ndarray(s["idxs"], depth).ravel()]
            shape = s.get("preferred_shape")
            return arr.reshape(tuple(shape)) if shape is not None else arr
        raise ValueError(f"unsupported chumpy object with state keys {sorted(map(str, s))}")


class _SparseStandIn:
    """Receives the pickled state of a scipy.sparse matrix; converted to a dense array."""

    fmt = "csc"

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self, depth: int = 0) -> np.ndarray:
        import scipy.sparse as sp

        s = self.state
        fields = ["data", "indices", "indptr"] if self.fmt in ("csc", "csr") else ["data"]
        if self.fmt == "coo" and "coords" not in s:
            fields += ["row", "col"]
        missing = [k for k in fields if k not in s] + ([] if "_shape" in s or "shape" in s else ["_shape"])
        if missing:
            raise ValueError(f"a pickled scipy.sparse {self.fmt} matrix is missing field(s) {missing}")
        shape = s.get("_shape") or s.get("shape")
        if (
            not isinstance(shape, tuple)
            or len(shape) != 2
            or not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape)
        ):
            raise ValueError(f"a pickled scipy.sparse matrix has shape {shape!r}, not two non-negative integers")
        shape = (int(shape[0]), int(shape[1]))
        if shape[0] * shape[1] * 8 > MAX_ARRAY_BYTES:
            raise ValueError(
                f"a pickled scipy.sparse matrix declares shape {shape}, larger as a dense array than the "
                f"{MAX_ARRAY_BYTES >> 20} MiB any body-model array needs"
            )
        data = _ndarray(s["data"], depth)
        if self.fmt in ("csc", "csr"):
            cls = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
            mat = cls((data, _ndarray(s["indices"], depth), _ndarray(s["indptr"], depth)), shape=shape)
            mat.check_format(full_check=True)  # toarray() does not check indices against the shape
        else:
            coords = s["coords"] if "coords" in s else (s["row"], s["col"])
            if not isinstance(coords, (tuple, list)) or len(coords) != 2:
                raise ValueError("a pickled scipy.sparse coo matrix has coords that are not (row, col)")
            rows, cols = _ndarray(coords[0], depth), _ndarray(coords[1], depth)
            mat = sp.coo_matrix((data, (rows, cols)), shape=shape)
        return np.asarray(mat.toarray())


def _sparse_class(fmt):
    return type(f"_{fmt}_matrix", (_SparseStandIn,), {"fmt": fmt})


def _to_array(obj, depth: int = 0):
    if isinstance(obj, (_ChumpyStandIn, _SparseStandIn)):
        if depth >= _MAX_NESTING:
            raise ValueError(f"chumpy objects nested more than {_MAX_NESTING} deep (one that contains itself?)")
        return obj.to_array(depth + 1)
    return obj


def _ndarray(obj, depth: int = 0) -> np.ndarray:
    """A numpy array from a pickled value; lists are refused (a few bytes of pickle can nest them into billions)."""
    obj = _to_array(obj, depth)
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"expected an array, found a {type(obj).__name__}")
    return obj


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()


def _bounded_reconstruct(subtype, shape, dtype):
    """numpy's array unpickling hook, refusing an initial shape beyond the limits (it is allocated)."""
    dims = shape if isinstance(shape, tuple) else (shape,)
    if subtype is not np.ndarray or not all(isinstance(n, int) and 0 <= n for n in dims):
        raise pickle.UnpicklingError(f"refusing array reconstruction of {subtype!r} with shape {shape!r}")
    if math.prod(dims) > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(f"refusing to allocate an array of shape {shape!r}")
    return _RECONSTRUCT(subtype, shape, dtype)


def _object_reconstructor(cls, base, state):
    """copyreg._reconstructor (how Python 2 pickled chumpy objects), for plain objects only."""
    if base is not object or not isinstance(cls, type) or not issubclass(cls, (_ChumpyStandIn, _SparseStandIn)):
        raise pickle.UnpicklingError(f"refusing copy_reg._reconstructor({cls!r}, {base!r})")
    return copyreg._reconstructor(cls, base, state)


def _empty_bytes(*args):
    """bytes(): how protocol-2 pickles from Python 3 write an empty bytes object (bytes(n) would allocate n)."""
    if args:
        raise pickle.UnpicklingError(f"refusing bytes{args!r}")
    return b""


_ALLOWED = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copyreg", "_reconstructor"): _object_reconstructor,
    ("copy_reg", "_reconstructor"): _object_reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): _latin1_encode,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _bounded_reconstruct
    _ALLOWED[(_mod, "scalar")] = _SCALAR
for _fmt in ("csc", "csr", "coo"):
    for _mod in ("scipy.sparse", f"scipy.sparse.{_fmt}", f"scipy.sparse._{_fmt}"):
        _ALLOWED[(_mod, f"{_fmt}_matrix")] = _sparse_class(_fmt)
        _ALLOWED[(_mod, f"{_fmt}_array")] = _sparse_class(_fmt)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist (possibly malicious)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {})
        raise RefusedGlobalError(
            f"refusing to load global '{module}.{name}': not on the allowlist of a body-model file"
        )


def _check_pickle_opcodes(raw: bytes) -> None:
    """Refuse memo indices beyond the stream (the C unpickler grows its memo to the index given)."""
    for count, (op, arg, _) in enumerate(pickletools.genops(raw)):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= count:
            raise pickle.UnpicklingError(f"memo index {arg} at opcode {count}")


# --- declared shapes and dtypes, checked before any data is read


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * dtype.itemsize  # Python ints: no overflow


def _check_declared(path, key, shape, dtype) -> None:
    """An array's dtype and declared size, before its data is allocated or read."""
    if dtype.hasobject:
        raise ModelFileError(f"{path}: {key!r} is a pickled object array (dtype {dtype}); refusing to read it")
    if key == "joint_names":
        kinds, want = "US", "strings"
    elif key in _INTEGER_KEYS:
        kinds, want = "iuf", "integers"
    else:
        kinds, want = "iuf", "numbers"
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise ModelFileError(f"{path}: {key!r} must hold {want}, found dtype {dtype}")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ModelFileError(f"{path}: {key!r} declares an invalid shape {shape}")
    nbytes = _nbytes(shape, dtype)
    if nbytes > MAX_ARRAY_BYTES:
        raise ModelFileError(
            f"{path}: {key!r} declares shape {shape} of {dtype} ({nbytes / 2**20:,.0f} MiB), more than the "
            f"{MAX_ARRAY_BYTES / 2**20:,.0f} MiB any body-model array needs"
        )


def _guess_other_model(names, shapes: dict) -> str | None:
    v_shape = shapes.get("v_template", ())
    k_shape = shapes.get("kintree_table", ())
    n_verts = v_shape[0] if len(v_shape) >= 1 else 0
    n_joints = k_shape[1] if len(k_shape) >= 2 else 0
    if "lmk_faces_idx" in names or n_verts == 10475:
        return "SMPL-X"
    if n_verts == 778 or ("hands_components" in names and n_joints == 16):
        return "MANO"
    if n_joints == 52 or "hands_coeffsl" in names:
        return "SMPL-H"
    return None


def _check_keys(path, names, shapes: dict) -> None:
    """The file is an SMPL model holding every key `load` needs (from names and the shapes of two keys)."""
    other = _guess_other_model(names, shapes)
    if other is not None:
        raise ModelFileError(f"{path}: this looks like a {other} model file, but an SMPL model (24 joints) is expected")
    missing = [k for k in _REQUIRED_KEYS if k not in names]
    if missing:
        raise ModelFileError(f"{path}: missing key(s) {missing}; an SMPL file holds {list(_REQUIRED_KEYS)}")


def _check_layout(path, specs: dict) -> None:
    """The shapes and dtypes of the arrays `load` reads (key -> (shape, dtype)), before reading them."""
    for key, (shape, dtype) in specs.items():
        _check_declared(path, key, shape, dtype)
    total = sum(_nbytes(shape, dtype) for shape, dtype in specs.values())
    if total > MAX_MODEL_BYTES:
        raise ModelFileError(
            f"{path}: the model's arrays declare {total / 2**20:,.0f} MiB, more than {MAX_MODEL_BYTES >> 20} MiB"
        )

    def shape(k):
        return tuple(specs[k][0])

    v = shape("v_template")
    if len(v) != 2 or v[1] != 3 or not 1 <= v[0] <= MAX_VERTICES:
        raise ModelFileError(f"{path}: v_template must be (V, 3) with 1 <= V <= {MAX_VERTICES:,}, found {v}")
    n = v[0]
    s, fs = shape("shapedirs"), shape("f")
    checks = {
        "shapedirs": (len(s) == 3 and s[:2] == (n, 3) and s[2] <= MAX_SHAPE_DIRS, f"({n}, 3, K <= {MAX_SHAPE_DIRS})"),
        "posedirs": (shape("posedirs") == (n, 3, NUM_POSE_BASIS), f"({n}, 3, {NUM_POSE_BASIS})"),
        "J_regressor": (shape("J_regressor") == (NUM_JOINTS, n), f"({NUM_JOINTS}, {n})"),
        "weights": (shape("weights") == (n, NUM_JOINTS), f"({n}, {NUM_JOINTS})"),
        "kintree_table": (shape("kintree_table") == (2, NUM_JOINTS), f"(2, {NUM_JOINTS})"),
        "f": (len(fs) == 2 and fs[1] == 3 and fs[0] <= MAX_FACES, f"(F <= {MAX_FACES:,}, 3)"),
    }
    if "joint_names" in specs:
        checks["joint_names"] = (shape("joint_names") == (NUM_JOINTS,), f"({NUM_JOINTS},)")
    for key, (ok, expected) in checks.items():
        if not ok:
            raise ModelFileError(f"{path}: {key} must have shape {expected} for a {n}-vertex model, found {shape(key)}")


def _integer_values(path, key, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ModelFileError(f"{path}: {key} must hold integers, found non-integral floats ({arr.dtype})")
        return arr.astype(np.int64)
    return arr


def _check_values(path, arrays: dict) -> None:
    """Values of the arrays read: finite numbers, faces and parents within range."""
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        arr = arrays[key]
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ModelFileError(f"{path}: {key} contains NaN or inf")
    n = arrays["v_template"].shape[0]
    faces = _integer_values(path, "f", arrays["f"])
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise ModelFileError(
            f"{path}: f (face vertex indices) must lie in [0, {n}), found range [{faces.min()}, {faces.max()}]"
        )
    parents = [int(p) for p in _integer_values(path, "kintree_table", arrays["kintree_table"])[0].tolist()]
    bad = [i for i, p in enumerate(parents) if not (p in _ROOT_PARENTS if i == 0 else 0 <= p < i)]
    if bad:
        raise ModelFileError(
            f"{path}: kintree_table row 0 must list each joint's parent (-1 for the root, else an earlier "
            f"joint), found {parents[bad[0]]} for joint {bad[0]}: {parents}"
        )


# --- .pkl


def _read_pkl(path) -> dict:
    size = os.path.getsize(path)
    if size > MAX_PKL_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes, more than the {MAX_PKL_BYTES:,} a body-model pickle needs")
    with open(path, "rb") as f:
        raw = f.read(size + 1)
    if len(raw) > size:
        raise ModelFileError(f"{path}: changed while being read")
    try:
        _check_pickle_opcodes(raw)
        data = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedGlobalError as e:
        raise ModelFileError(f"{path}: {e}") from None
    except Exception as e:  # whatever a corrupt stream raises: UnpicklingError, EOFError, MemoryError, ...
        raise ModelFileError(f"{path}: not a readable body-model pickle (truncated or corrupt?): {e!r}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a pickled dict of model arrays, found {type(data).__name__}")
    values = {str(k): v for k, v in data.items()}

    def array(key):
        try:
            value = values[key]
            if key == "joint_names" and isinstance(value, (list, tuple)) and len(value) <= NUM_JOINTS:
                value = np.asarray([str(s) for s in value])
            arr = _ndarray(value)
        except RecursionError:
            raise ModelFileError(f"{path}: {key}: nested too deeply (an object that contains itself?)") from None
        except Exception as e:
            raise ModelFileError(f"{path}: {key}: not a usable array: {e}") from None
        _check_declared(path, key, arr.shape, arr.dtype)
        return arr

    arrays = {k: array(k) for k in ("v_template", "kintree_table") if k in values}
    _check_keys(path, set(values), {k: a.shape for k, a in arrays.items()})
    arrays.update({k: array(k) for k in _REQUIRED_KEYS + _OPTIONAL_KEYS if k in values and k not in arrays})
    _check_layout(path, {k: (a.shape, a.dtype) for k, a in arrays.items()})
    return arrays


# --- .npz / .npy, read member by member from their headers


def _check_zip_directory(path) -> None:
    """Bound a zip's central directory from its end record, before zipfile parses all of it."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_len = min(size, 22 + 65_535)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            raise ModelFileError(f"{path}: not a readable .npz file (truncated or corrupt?): no zip end record")
        entries, directory = struct.unpack_from("<4s4H2LH", tail, at)[4:6]
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
            fh.seek(struct.unpack_from("<4sLQL", tail, at - 20)[2])
            record = fh.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                entries, directory = struct.unpack("<4sQ2H2L4Q", record)[7:9]
    if entries > _MAX_ZIP_MEMBERS or directory > _MAX_ZIP_DIRECTORY_BYTES:
        raise ModelFileError(
            f"{path}: the zip directory declares {entries:,} members in {directory:,} bytes, more than a model "
            f"file needs ({_MAX_ZIP_MEMBERS:,} members, {_MAX_ZIP_DIRECTORY_BYTES:,} bytes)"
        )


def _read_npy_header(fp, where) -> tuple:
    """(shape, fortran_order, dtype, header length) of the .npy stream `fp`, reading only its header."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        return tuple(shape), bool(fortran), dtype, fp.tell()
    except Exception as e:
        raise ModelFileError(f"{where}: not a readable .npy array (truncated or corrupt?): {e}") from None


def _read_npy_data(fp, header, where) -> np.ndarray:
    """The data after a checked header, read in chunks into one array of the declared size."""
    shape, fortran, dtype, _ = header
    arr = np.empty(math.prod(shape), dtype)
    buf, nbytes, pos = arr.view(np.uint8), arr.nbytes, 0
    while pos < nbytes:
        chunk = fp.read(min(_READ_CHUNK, nbytes - pos))
        if not chunk:
            raise ModelFileError(f"{where}: truncated: {pos:,} of {nbytes:,} data bytes")
        buf[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


class _NpzReader:
    """The members of an .npz read one by one: a header, checked, then (maybe) its data."""

    def __init__(self, path, zf: zipfile.ZipFile):
        self.path, self.zf, self.headers = path, zf, {}
        self.members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in zf.infolist()}

    def header(self, key) -> tuple:
        if key not in self.headers:
            info, where = self.members[key], f"{self.path}: member {key!r}"
            with self.zf.open(info) as fp:
                header = _read_npy_header(fp, where)
            shape, _, dtype, offset = header
            _check_declared(self.path, key, shape, dtype)
            if info.file_size != offset + _nbytes(shape, dtype):
                raise ModelFileError(
                    f"{where}: the zip entry declares {info.file_size:,} bytes uncompressed but its .npy header "
                    f"(shape {shape}, {dtype}) needs {offset + _nbytes(shape, dtype):,}"
                )
            self.headers[key] = header
        return self.headers[key]

    def read(self, key) -> np.ndarray:
        where = f"{self.path}: member {key!r}"
        with self.zf.open(self.members[key]) as fp:
            if _read_npy_header(fp, where) != self.header(key):
                raise ModelFileError(f"{where}: changed while being read")
            return _read_npy_data(fp, self.headers[key], where)


def _open_npz(path, what: str):
    _check_zip_directory(path)
    try:
        return zipfile.ZipFile(path)
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable {what} (truncated or corrupt?): {e!r}") from None


def _read_npz(path) -> dict:
    with _open_npz(path, ".npz file") as zf:
        try:
            z = _NpzReader(path, zf)
            shapes = {k: z.header(k)[0] for k in ("v_template", "kintree_table") if k in z.members}
            _check_keys(path, set(z.members), shapes)
            keys = [k for k in _REQUIRED_KEYS + _OPTIONAL_KEYS if k in z.members]
            _check_layout(path, {k: (z.header(k)[0], z.header(k)[2]) for k in keys})
            return {k: z.read(k) for k in keys}
        except ModelFileError:
            raise
        except Exception as e:  # zipfile / zlib errors in a corrupt member
            raise ModelFileError(f"{path}: not a readable .npz file (truncated or corrupt?): {e!r}") from None


def _existing(path, what: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileNotFoundError(f"{what} file not found: {path}")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: not a regular file")
    return path


def from_arrays(
    v_template,
    shapedirs,
    posedirs,
    J_regressor,
    weights,
    f,
    kintree_table=None,
    joint_names=None,
    dtype=np.float32,
    **unused,
) -> SMPLModel:
    """Build an `SMPLModel` from arrays in SMPL's file layout (shapedirs (V, 3, K), posedirs (V, 3, 207))."""
    v_template = np.asarray(v_template, np.float64)
    shapedirs = np.asarray(shapedirs, np.float64).transpose(2, 1, 0)  # (K, 3, V)
    posedirs = np.asarray(posedirs, np.float64).transpose(2, 1, 0)  # (207, 3, V)
    j_reg = np.asarray(J_regressor, np.float64)
    parents = skeleton.SMPL24_PARENTS
    if kintree_table is not None:
        p = np.asarray(kintree_table)[0].astype(np.int64)
        parents = tuple(int(x) if 0 <= x < NUM_JOINTS else -1 for x in p)
        if parents[0] != -1 or any(not 0 <= parents[i] < i for i in range(1, len(parents))):
            raise ValueError(f"kintree_table row 0 is not a valid parent list (parents[i] < i): {parents}")
    names = skeleton.SMPL24_NAMES if joint_names is None else tuple(str(s) for s in np.asarray(joint_names).tolist())
    return SMPLModel(
        v_template=jnp.asarray(v_template, dtype),
        shapedirs=jnp.asarray(shapedirs, dtype),
        posedirs=jnp.asarray(posedirs, dtype),
        J_regressor=jnp.asarray(j_reg, dtype),
        joint_template=jnp.asarray(j_reg @ v_template, dtype),
        joint_shapedirs=jnp.asarray(np.einsum("jv,kcv->kjc", j_reg, shapedirs), dtype),
        weights=jnp.asarray(weights, dtype),
        faces=jnp.asarray(np.asarray(f, np.int64), jnp.int32),
        parents=parents,
        joint_names=names,
    )


def load(path: str | os.PathLike, dtype=np.float32) -> SMPLModel:
    """Load an SMPL model from `.npz` (plain arrays) or an official SMPL `.pkl` (safely).

    Every problem with the file raises `ModelFileError` (a ValueError; `ModelFileNotFoundError`,
    also a FileNotFoundError, for a missing file) naming the file and the problem. Declared
    shapes, dtypes and sizes are checked against the limits above (`MAX_VERTICES`, ...) before
    any array is allocated or decompressed, and of an .npz only the members a model needs are read.
    """
    path = _existing(path, "SMPL model")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        arrays = _read_npz(path)
    elif ext == ".pkl":
        arrays = _read_pkl(path)
    else:
        raise ModelFileError(f"{path}: unknown model file type {ext!r}; expected .npz or .pkl")
    _check_values(path, arrays)
    try:
        return from_arrays(**arrays, dtype=dtype)
    except Exception as e:
        raise ModelFileError(f"{path}: {e}") from None


def load_regressor(
    path: str | os.PathLike, num_joints: int | None = None, num_vertices: int | None = None
) -> np.ndarray:
    """Load a dense (J, V) or (J, V + 24) float32 joint regressor (.npy / .npz, no pickle).

    E.g. SPIN's J_regressor_h36m.npy (17, V). The (J, V + 24) form also weights the 24 SMPL
    kinematic joints (see `model_joints`). Raises `ModelFileError` (a ValueError) naming the
    file when it is missing, unreadable, larger than `MAX_REGRESSOR_JOINTS` x (`MAX_VERTICES` + 24)
    (checked from its header, before reading), not finite, or not (num_joints, num_vertices)
    or (num_joints, num_vertices + 24).
    """
    path = _existing(path, "joint regressor")
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        with _open_npz(path, "regressor array") as zf:
            try:
                z = _NpzReader(path, zf)
                if not z.members:
                    raise ModelFileError(f"{path}: not a readable regressor array: the .npz holds no arrays")
                key = next(iter(z.members))
                shape, _, dtype, _ = z.header(key)
                _check_regressor_shape(path, shape, num_joints, num_vertices)
                arr = z.read(key)
            except ModelFileError:
                raise
            except Exception as e:
                raise ModelFileError(f"{path}: not a readable regressor array: {e!r}") from None
    else:
        with open(path, "rb") as fh:
            header = _read_npy_header(fh, path)
            shape, _, dtype, offset = header
            _check_declared(path, "regressor", shape, dtype)
            _check_regressor_shape(path, shape, num_joints, num_vertices)
            if os.path.getsize(path) < offset + _nbytes(shape, dtype):
                raise ModelFileError(f"{path}: truncated: the header declares {shape} {dtype}, the file is shorter")
            arr = _read_npy_data(fh, header, path)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ModelFileError(f"{path}: the joint regressor contains NaN or inf")
    return arr.astype(np.float32)


def _check_regressor_shape(path, shape, num_joints, num_vertices) -> None:
    if len(shape) != 2:
        raise ModelFileError(f"{path}: a joint regressor must be (J, {num_vertices or 'V'}), found {shape}")
    if shape[0] > MAX_REGRESSOR_JOINTS or shape[1] > MAX_VERTICES + NUM_JOINTS:
        raise ModelFileError(
            f"{path}: a joint regressor declares shape {shape}, more than "
            f"({MAX_REGRESSOR_JOINTS}, {MAX_VERTICES + NUM_JOINTS}) joints x columns"
        )
    cols = None if num_vertices is None else (num_vertices, num_vertices + NUM_JOINTS)
    if (num_joints is not None and shape[0] != num_joints) or (cols is not None and shape[1] not in cols):
        j = "J" if num_joints is None else num_joints
        v = "V" if num_vertices is None else num_vertices
        v24 = "V + 24" if num_vertices is None else num_vertices + NUM_JOINTS
        raise ModelFileError(f"joint regressor file {path!r}: expected shape ({j}, {v}) or ({j}, {v24}), found {shape}")


def take_vertices(model: SMPLModel, indices) -> SMPLModel:
    """The body restricted to the vertices `indices` (1-D, unique, increasing, within [0, V)).

    `forward` on the result gives exactly those vertices of the full body's, in that order, and
    the same joints (they come from joint_template / joint_shapedirs, which are kept whole), at
    the cost of len(indices) vertices: e.g. vertex losses on a subset in a training step
    (config `train.vertex_loss_stride`). J_regressor keeps the columns of the kept vertices;
    faces keep the triangles whose three corners are kept, renumbered.
    """
    idx = np.asarray(indices)
    v = model.num_vertices
    if (
        idx.ndim != 1
        or idx.size == 0
        or not np.issubdtype(idx.dtype, np.integer)
        or idx[0] < 0
        or idx[-1] >= v
        or np.any(np.diff(idx) <= 0)
    ):
        raise ValueError(
            f"take_vertices: indices must be a non-empty, increasing 1-D integer array within "
            f"[0, {v}), found shape {idx.shape} dtype {idx.dtype}"
        )
    new_index = np.full(v, -1, np.int64)
    new_index[idx] = np.arange(idx.size)
    faces = new_index[np.asarray(model.faces)]  # (F, 3), -1 where a corner was dropped
    faces = faces[np.all(faces >= 0, axis=1)]
    return dataclasses.replace(
        model,
        v_template=model.v_template[idx],
        shapedirs=model.shapedirs[:, :, idx],
        posedirs=model.posedirs[:, :, idx],
        J_regressor=model.J_regressor[:, idx],
        weights=model.weights[idx],
        faces=jnp.asarray(faces, jnp.int32),
    )


# ----------------------------------------------------------------------------- forward


def _as_rotmats(pose: Array) -> Array:
    if pose.shape[-1] == NUM_JOINTS * 3:
        return geometry.axis_angle_to_matrix(pose.reshape(pose.shape[:-1] + (NUM_JOINTS, 3)))
    if pose.shape[-3:] == (NUM_JOINTS, 3, 3):
        return pose
    raise ValueError(f"pose must be (..., 72) axis-angle or (..., 24, 3, 3) rotation matrices, found {pose.shape}")


def forward(
    model: SMPLModel,
    betas: Float[Array, "*batch k"],
    pose: Float[Array, "*batch 72"] | Float[Array, "*batch 24 3 3"],
    transl: Float[Array, "*batch 3"] | None = None,
) -> SMPLOutput:
    """SMPL linear blend skinning for any leading batch shape.

    Uses the first K shape directions for betas of size K (K <= model.num_betas).
    """
    dtype = model.v_template.dtype
    betas = jnp.asarray(betas, dtype)
    rot = _as_rotmats(jnp.asarray(pose, dtype))
    k = betas.shape[-1]
    if k > model.num_betas:
        raise ValueError(f"betas has {k} coefficients but the model file holds only {model.num_betas} shape directions")
    batch = jnp.broadcast_shapes(betas.shape[:-1], rot.shape[:-3])
    n = int(np.prod(batch, dtype=np.int64))
    betas = jnp.broadcast_to(betas, batch + (k,)).reshape(n, k)
    rot = jnp.broadcast_to(rot, batch + (NUM_JOINTS, 3, 3)).reshape(n, NUM_JOINTS, 3, 3)
    v = model.num_vertices

    if n > _CHUNK:  # large batches: chunks keep the per-vertex intermediates in cache
        pad = -n % _CHUNK
        chunks = (
            jnp.pad(betas, ((0, pad), (0, 0))).reshape(-1, _CHUNK, k),
            jnp.pad(rot, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(-1, _CHUNK, NUM_JOINTS, 3, 3),
        )
        verts, posed_joints = jax.lax.map(lambda c: _forward_flat(model, *c), chunks)
        verts, posed_joints = verts.reshape(-1, v, 3)[:n], posed_joints.reshape(-1, NUM_JOINTS, 3)[:n]
    else:
        verts, posed_joints = _forward_flat(model, betas, rot)
    if transl is not None:
        transl = jnp.broadcast_to(jnp.asarray(transl, dtype), batch + (3,)).reshape(n, 1, 3)
        verts = verts + transl
        posed_joints = posed_joints + transl
    return SMPLOutput(verts.reshape(batch + (v, 3)), posed_joints.reshape(batch + (NUM_JOINTS, 3)))


_CHUNK = 64


def _forward_flat(model: SMPLModel, betas: Array, rot: Array) -> tuple[Array, Array]:
    """LBS for a flat batch: betas (n, K), rot (n, 24, 3, 3) -> vertices (n, V, 3), joints (n, 24, 3)."""
    n, k = betas.shape
    v = model.num_vertices
    dtype = betas.dtype
    # Everything per vertex is kept coordinate-major, (n, 3, V): vertex index innermost.
    # Shape: template + blend shapes, and the joints of the shaped body (linear in betas).
    v_shaped = model.v_template.T + (betas @ model.shapedirs[:k].reshape(k, 3 * v)).reshape(n, 3, v)
    joints = model.joint_template + (betas @ model.joint_shapedirs[:k].reshape(k, -1)).reshape(n, NUM_JOINTS, 3)
    # Pose-corrective blend shapes from (R - I) of the 23 body joints: (n, 207) @ (207, 3V).
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(n, NUM_POSE_BASIS)
    v_posed = v_shaped + (pose_feature @ model.posedirs.reshape(NUM_POSE_BASIS, 3 * v)).reshape(n, 3, v)
    # Kinematic chain, then skinning: blend the joints' (3, 4) transforms per vertex with one
    # (12n, 24) @ (24, V) product, and apply them with elementwise ops along vertices.
    posed_joints, transforms = geometry.kinematic_chain(rot, joints, model.parents)
    per_joint = transforms[:, :, :3, :].reshape(n, NUM_JOINTS, 12).transpose(0, 2, 1).reshape(n * 12, NUM_JOINTS)
    blended = (per_joint @ model.weights.T).reshape(n, 3, 4, v)
    verts = (
        blended[:, :, 0] * v_posed[:, None, 0]
        + blended[:, :, 1] * v_posed[:, None, 1]
        + blended[:, :, 2] * v_posed[:, None, 2]
        + blended[:, :, 3]
    )  # (n, 3, V)
    return jnp.swapaxes(verts, 1, 2), posed_joints


def regress_joints(
    model_or_regressor: "SMPLModel | Float[Array, 'j v']", vertices: Float[Array, "*batch v 3"]
) -> Float[Array, "*batch j 3"]:
    """Joints regressed from vertices: the model's J_regressor, or any (J, V) regressor array."""
    reg = model_or_regressor.J_regressor if isinstance(model_or_regressor, SMPLModel) else model_or_regressor
    reg = jnp.asarray(reg, vertices.dtype)
    if reg.ndim != 2 or reg.shape[1] != vertices.shape[-2]:
        raise ValueError(f"regressor must be (J, {vertices.shape[-2]}) for these vertices, found {reg.shape}")
    return jnp.einsum("jv,...vc->...jc", reg, vertices)


def model_joints(
    joint_set: str,
    smpl_joints: Float[Array, "b 24 3"],
    vertices: Float[Array, "b v 3"],
    regressors: Mapping[str, Float[Array, "j n"]] | None = None,
) -> Float[Array, "b j 3"]:
    """The body model's joints in a joint set (`skeleton.JOINT_SETS`).

    Args:
      joint_set: 'smpl24' (returns `smpl_joints`), 'spin24' or 'h36m17' (regressed with
        `regressors[joint_set]`).
      smpl_joints: posed SMPL kinematic joints (B, 24, 3).
      vertices: posed SMPL vertices (B, V, 3).
      regressors: optional dict joint-set name -> regressor (see `load_regressor`), either
        (J, V), applied to `vertices`, or (J, V + 24), applied to the points
        ``concatenate([vertices, smpl_joints], axis=-2)`` (so column V + k is SMPL joint k).
    """
    js = skeleton.get_joint_set(joint_set)
    if joint_set == "smpl24":
        return smpl_joints
    if regressors is None or regressors.get(joint_set) is None:
        key = "data.joint_regressor" if joint_set == "spin24" else "eval.h36m_regressor"
        raise ValueError(
            f"joint set {joint_set!r} needs a ({js.num_joints}, V) vertex-to-joint regressor, but "
            f"none was given: set config '{key}' to a .npy/.npz file holding it"
        )
    reg = regressors[joint_set]
    if reg.shape[0] != js.num_joints:
        raise ValueError(
            f"regressor for joint set {joint_set!r}: expected {js.num_joints} rows, found shape {tuple(reg.shape)}"
        )
    v, k = vertices.shape[-2], smpl_joints.shape[-2]
    if reg.ndim != 2 or reg.shape[1] not in (v, v + k):
        raise ValueError(
            f"regressor for joint set {joint_set!r}: expected shape ({js.num_joints}, {v}) (vertices) or "
            f"({js.num_joints}, {v + k}) (vertices then {k} SMPL joints), found {tuple(reg.shape)}"
        )
    if reg.shape[1] == v + k:
        return regress_joints(reg, jnp.concatenate([vertices, smpl_joints.astype(vertices.dtype)], axis=-2))
    return regress_joints(reg, vertices)


def save_obj(path: str | os.PathLike, vertices, faces) -> None:
    """Write a triangle mesh as Wavefront OBJ (1-based face indices)."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"save_obj expects vertices (V, 3) and faces (F, 3), found {vertices.shape}, {faces.shape}")
    with open(path, "w") as f:
        f.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices))
        f.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))

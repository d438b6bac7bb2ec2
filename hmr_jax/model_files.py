"""Reading body-model files safely: SMPL-layout `.npz` archives and official SMPL `.pkl` files,
and joint-regressor `.npy` / `.npz` arrays, as plain numpy arrays.

Official SMPL ``.pkl`` files are Python-2 pickles holding chumpy objects and scipy sparse
matrices. A pickle can run arbitrary code, so they are read by a restricted unpickler whose
allowlist holds only numpy array reconstruction, scipy sparse matrices (turned into dense
arrays), stand-ins for chumpy's array objects and a few harmless builtins. Anything else
(``os.system``, ``builtins.eval``, ...) is refused by name before it can run; chumpy itself is
never needed. Every declared shape, dtype and size is checked against the limits below before
anything is allocated, decompressed or unpickled, and every failure is a `ModelFileError` (a
ValueError) naming the file and the problem. Imports nothing from the package but `skeleton`.
"""

import codecs
import copyreg
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np

from hmr_jax import skeleton

NUM_JOINTS = len(skeleton.SMPL24_NAMES)  # 24
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

MAX_VERTICES = 50_000
MAX_FACES = 4 * MAX_VERTICES  # a closed triangle mesh has about 2 faces per vertex
MAX_SHAPE_DIRS = 512
MAX_REGRESSOR_JOINTS = 1_024
MAX_LANDMARKS = 1_024  # named landmark vertices (landmark_names / landmark_vertices)
MAX_NAME_CHARS = 256  # each joint or landmark name
MAX_ARRAY_BYTES = MAX_VERTICES * 3 * MAX_SHAPE_DIRS * 8  # shapedirs at the limits in float64: ~614 MB
MAX_MODEL_BYTES = 1 << 30  # all the arrays a model is built from, together
MAX_PKL_BYTES = 1 << 30  # a .pkl is read whole
_MAX_ZIP_MEMBERS = 1_024
_MAX_ZIP_DIRECTORY_BYTES = 4 << 20
_MAX_NPY_HEADER = 10_000
_MAX_NESTING = 16  # chumpy objects inside chumpy objects
_READ_CHUNK = 16 << 20
_ROOT_PARENTS = (-1, 2**32 - 1, 2**64 - 1)  # kintree_table's "no parent": -1 as int, uint32 or uint64
_OPTIONAL_KEYS = ("joint_names", "landmark_names", "landmark_vertices")
_INTEGER_KEYS = ("f", "kintree_table", "landmark_vertices")
_STRING_KEYS = ("joint_names", "landmark_names")


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
    if key in _STRING_KEYS:
        kinds, want = "US", "strings"
    elif key in _INTEGER_KEYS:
        kinds, want = "iuf", "integers"
    else:
        kinds, want = "iuf", "numbers"
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise ModelFileError(f"{path}: {key!r} must hold {want}, found dtype {dtype}")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ModelFileError(f"{path}: {key!r} declares an invalid shape {shape}")
    if key in _STRING_KEYS and dtype.itemsize > MAX_NAME_CHARS * (4 if dtype.kind == "U" else 1):
        raise ModelFileError(f"{path}: {key!r} holds names longer than {MAX_NAME_CHARS} characters ({dtype})")
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
    if ("landmark_names" in specs) != ("landmark_vertices" in specs):
        given, absent = ("landmark_names", "landmark_vertices")
        if "landmark_vertices" in specs:
            given, absent = absent, given
        raise ModelFileError(f"{path}: {given} without {absent}; a model names landmark vertices with both or neither")
    if "landmark_names" in specs:
        ln = shape("landmark_names")
        checks["landmark_names"] = (len(ln) == 1 and ln[0] <= MAX_LANDMARKS, f"(L <= {MAX_LANDMARKS},)")
        checks["landmark_vertices"] = (shape("landmark_vertices") == ln, f"{ln} (one per landmark name)")
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
    if "landmark_vertices" in arrays:
        lv = _integer_values(path, "landmark_vertices", arrays["landmark_vertices"]).astype(np.int64)
        bad = np.flatnonzero((lv < 0) | (lv >= n))
        if bad.size:
            name = arrays["landmark_names"][bad[0]]
            raise ModelFileError(
                f"{path}: landmark_vertices must lie in [0, {n}) (the model's vertices), found {lv[bad[0]]} "
                f"for landmark {str(name)!r}"
            )
        arrays["landmark_vertices"] = lv
    parents = [int(p) for p in _integer_values(path, "kintree_table", arrays["kintree_table"])[0].tolist()]
    bad = [i for i, p in enumerate(parents) if not (p in _ROOT_PARENTS if i == 0 else 0 <= p < i)]
    if bad:
        raise ModelFileError(
            f"{path}: kintree_table row 0 must list each joint's parent (-1 for the root, else an earlier "
            f"joint), found {parents[bad[0]]} for joint {bad[0]}: {parents}"
        )


# --- .pkl

# Keys a .pkl may hold as a short Python list: (most items, the one type each item must have).
_PKL_LISTS = {
    "joint_names": (NUM_JOINTS, str),
    "landmark_names": (MAX_LANDMARKS, str),
    "landmark_vertices": (MAX_LANDMARKS, int),
}


def _small_list(value, limit: int, kind: type) -> np.ndarray:
    """A list of at most `limit` strs (or Python-2 bytes) / ints as an array; nothing else is converted."""
    if len(value) > limit:
        raise ValueError(f"a list of {len(value):,} items, more than {limit:,}")
    if kind is str:
        value = [s.decode("latin1") if isinstance(s, bytes) else s for s in value]
        if not all(isinstance(s, str) and len(s) <= MAX_NAME_CHARS for s in value):
            raise ValueError(f"expected a list of strings of at most {MAX_NAME_CHARS} characters")
        return np.asarray(value, dtype=str)
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in value):
        raise ValueError("expected a list of integers")
    return np.asarray([int(i) for i in value], dtype=np.int64)


def _unpickle_dict(path, what: str, holding: str) -> dict:
    """A pickled dict, read whole (size-checked) through the restricted unpickler; its keys as str."""
    size = os.path.getsize(path)
    if size > MAX_PKL_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes, more than the {MAX_PKL_BYTES:,} a {what} may have")
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
        raise ModelFileError(f"{path}: not a readable {what} (truncated or corrupt?): {e!r}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a pickled dict {holding}, found {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def _read_pkl(path) -> dict:
    values = _unpickle_dict(path, "body-model pickle", "of model arrays")

    def array(key):
        try:
            value = values[key]
            if isinstance(value, (list, tuple)) and key in _PKL_LISTS:
                value = _small_list(value, *_PKL_LISTS[key])
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


def read_pickle_dict(path: str | os.PathLike, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The numeric arrays `keys` of a pickled dict (e.g. SMPLify's gmm_08.pkl), read safely.

    The file goes through the same restricted unpickler and limits as an SMPL .pkl: no code from
    it runs (globals outside the allowlist are refused by name) and each array's size is bounded.
    Other keys of the dict are not converted. Raises `ModelFileError` (a ValueError) naming the
    file and `what` it should be when it is missing, too large, refused, corrupt, not a dict,
    lacks one of `keys`, or holds a value under one of them that is not a numeric array.
    """
    path = _existing(path, what)
    values = _unpickle_dict(path, what, f"holding {list(keys)}")
    missing = [k for k in keys if k not in values]
    if missing:
        raise ModelFileError(f"{path}: missing key(s) {missing}; a {what} holds {list(keys)}, found {sorted(values)}")
    arrays = {}
    for key in keys:
        try:
            arr = _ndarray(values[key])
        except RecursionError:
            raise ModelFileError(f"{path}: {key}: nested too deeply (an object that contains itself?)") from None
        except Exception as e:
            raise ModelFileError(f"{path}: {key}: not a usable array: {e}") from None
        _check_declared(path, key, arr.shape, arr.dtype)
        arrays[key] = arr
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


def read_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a body-model file (.npz or .pkl) in SMPL's file layout, checked."""
    path = _existing(path, "SMPL model")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        arrays = _read_npz(path)
    elif ext == ".pkl":
        arrays = _read_pkl(path)
    else:
        raise ModelFileError(f"{path}: unknown model file type {ext!r}; expected .npz or .pkl")
    _check_values(path, arrays)
    return arrays


def read_regressor(
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

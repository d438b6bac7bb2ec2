"""Hostile or broken body-model / regressor files: every failure of `smpl.load` and
`smpl.load_regressor` is a ValueError naming the file, and declared sizes are refused before
anything is allocated or decompressed."""

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from hmr_jax import skeleton, smpl

V = 30  # a small but well-formed SMPL-structured model keeps these tests fast


def small_arrays(seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.random((V, 24))
    weights /= weights.sum(1, keepdims=True)
    j_reg = rng.random((24, V))
    j_reg /= j_reg.sum(1, keepdims=True)
    kintree = np.stack([np.array(skeleton.SMPL24_PARENTS, np.int64) % 2**32, np.arange(24)]).astype(np.uint32)
    return dict(
        v_template=rng.normal(0, 0.3, (V, 3)),
        shapedirs=rng.normal(0, 0.03, (V, 3, 10)),
        posedirs=rng.normal(0, 0.01, (V, 3, 207)),
        J_regressor=j_reg,
        weights=weights,
        kintree_table=kintree,
        f=rng.integers(0, V, (40, 3)).astype(np.uint32),
    )


class _Ch:  # pickled as chumpy.ch.Ch
    def __init__(self, x):
        self.x = x

    def __getstate__(self):
        return {"x": self.x}


class _Select:  # pickled as chumpy.reordering.Select
    def __init__(self, a, idxs):
        self.a, self.idxs = a, idxs

    def __getstate__(self):
        return {"a": self.a, "idxs": self.idxs}


class _Csc:  # pickled as scipy.sparse.csc.csc_matrix, with a state we choose
    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state


_Ch.__module__ = _Select.__module__ = _Csc.__module__ = __name__
_RENAMES = [
    (f"{__name__}\n_Ch\n", "chumpy.ch\nCh\n"),
    (f"{__name__}\n_Select\n", "chumpy.reordering\nSelect\n"),
    (f"{__name__}\n_Csc\n", "scipy.sparse.csc\ncsc_matrix\n"),
]


def write_pkl(path, obj):
    """A protocol-2 pickle in the official files' style (chumpy / scipy.sparse module paths)."""
    raw = pickle.dumps(obj, protocol=2)
    for new, old in _RENAMES:
        raw = raw.replace(new.encode(), old.encode())
    path.write_bytes(raw)
    return path


def npy_bytes(arr=None, *, shape=None, descr=None, data=None) -> bytes:
    """A .npy stream: `arr`'s header (or one declaring `shape` / `descr`) and `data` (default: `arr`'s)."""
    arr = np.zeros(0) if arr is None else np.asarray(arr)
    header = np.lib.format.header_data_from_array_1_0(arr)
    if shape is not None:
        header["shape"] = shape
    if descr is not None:
        header["descr"] = descr
    fp = io.BytesIO()
    np.lib.format.write_array_header_1_0(fp, header)
    return fp.getvalue() + (arr.tobytes() if data is None else data)


def write_npz(path, members: dict):
    """An .npz from raw member bytes (name -> bytes); arrays are saved as usual."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            zf.writestr(name + ".npy", value if isinstance(value, bytes) else npy_bytes(value))
    return path


def traced_peak(fn) -> int:
    """Peak bytes allocated (numpy arrays included) while fn runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def raises_naming(path, match=""):
    return pytest.raises(ValueError, match=rf"{path.name}.*{match}")


def test_small_valid_files_load(tmp_path):
    arrays = small_arrays()
    np.savez(tmp_path / "a.npz", **arrays, dtype=np.zeros(1))  # a member named like load's argument
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    write_pkl(tmp_path / "o.pkl", dict(arrays, shapedirs=_Ch(arrays["shapedirs"])))
    for name in ("a.npz", "c.npz", "o.pkl"):
        model = smpl.load(tmp_path / name)
        np.testing.assert_allclose(model.v_template, arrays["v_template"], atol=1e-6)
        assert model.parents == skeleton.SMPL24_PARENTS


@pytest.mark.parametrize("where", ["Ch", "Select", "cycle"])
def test_self_referential_chumpy_object(tmp_path, where):
    arrays = small_arrays()
    ch = _Ch(None)
    if where == "Ch":
        ch.x = ch
    elif where == "Select":
        ch = _Select(None, np.arange(3))
        ch.a = ch
    else:
        other = _Ch(ch)
        ch.x = other
    path = write_pkl(tmp_path / "selfref.pkl", dict(arrays, shapedirs=ch))
    with raises_naming(path, "shapedirs"):
        smpl.load(path)


@pytest.mark.parametrize(
    "state",
    [
        dict(_shape=(24, V), data=np.ones(1), indices=np.zeros(1, np.int32)),  # no indptr
        dict(data=np.ones(1), indices=np.zeros(1, np.int32), indptr=np.zeros(V + 1, np.int32)),  # no shape
        dict(_shape=(10**6, 10**6), data=np.ones(0), indices=np.zeros(0, np.int32), indptr=np.zeros(10**6 + 1)),
        dict(_shape=(24, V), data=np.ones(3), indices=np.array([0, 99, 5]), indptr=np.r_[0, np.full(V, 3)]),
    ],
    ids=["no-indptr", "no-shape", "huge-shape", "inconsistent"],
)
def test_sparse_matrix_pickles(tmp_path, state):
    path = write_pkl(tmp_path / "sparse.pkl", dict(small_arrays(), J_regressor=_Csc(state)))
    with raises_naming(path, "J_regressor"):
        smpl.load(path)


@pytest.mark.parametrize("key", ["v_template", "weights", "f"])
def test_npz_member_declaring_a_huge_shape(tmp_path, key):
    arrays = small_arrays()
    members = dict(arrays, **{key: npy_bytes(arrays[key], shape=(10**12, 3))})
    path = write_npz(tmp_path / "huge.npz", members)
    with raises_naming(path, f"{key}.*declares shape"):
        smpl.load(path)


def _deflated_zeros_npz(path, member: str, shape, blocks: int):
    """A zip holding one .npy member of `blocks` MiB of zeros after a header declaring `shape`,
    written as repeated compressed blocks (a full flush makes each MiB compress to the same bytes),
    so the bomb costs ~1 kB per MiB of disk and no time to make."""
    header = npy_bytes(np.zeros(0), shape=shape, data=b"")
    mib = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    stream = head + block * blocks + c.flush()
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(mib, crc)
    size = len(header) + blocks * len(mib)
    name = (member + ".npy").encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 33, crc, len(stream), size, len(name), 0)
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 33, crc, len(stream), size, len(name), 0, 0, 0, 0, 0, 0
    )
    offset = len(local) + len(name) + len(stream)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), offset, 0)
    path.write_bytes(local + name + stream + central + name + end)
    return path


@pytest.mark.parametrize("member", ["v_template", "extra"])
def test_zip_bomb_is_not_decompressed(tmp_path, member):
    # 2 MB on disk, 2 GiB of float64 zeros when inflated.
    path = _deflated_zeros_npz(tmp_path / "bomb.npz", member, (2**28,), 2048)
    assert path.stat().st_size < 3 << 20
    with zipfile.ZipFile(path) as zf:  # a well-formed zip, CRC included (checked on a prefix)
        assert zf.infolist()[0].file_size > 2**31
    match = "declares shape" if member == "v_template" else r"missing key\(s\)"
    with raises_naming(path, match):
        peak = traced_peak(lambda: smpl.load(path))
    peak = traced_peak(lambda: pytest.raises(ValueError, smpl.load, path))
    assert peak < 32 << 20, f"loading a rejected bomb allocated {peak / 2**20:.0f} MiB"


def test_zip_entry_size_must_agree_with_the_npy_header(tmp_path):
    arrays = small_arrays()
    padded = npy_bytes(arrays["weights"]) + bytes(10_000)
    path = write_npz(tmp_path / "padded.npz", dict(arrays, weights=padded))
    with raises_naming(path, "weights.*uncompressed"):
        smpl.load(path)
    many = write_npz(tmp_path / "many.npz", {f"m{i}": np.zeros(1) for i in range(1100)})
    with raises_naming(many, "members"):
        peak = traced_peak(lambda: smpl.load(many))
    peak = traced_peak(lambda: pytest.raises(ValueError, smpl.load, many))
    assert peak < 1 << 20


def test_memo_index_far_beyond_the_stream(tmp_path):
    # LONG_BINPUT 2**32-1: the C unpickler would grow its memo to 2**33 slots (64 GiB).
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02}r\xff\xff\xff\xff.")
    with raises_naming(path, "truncated or corrupt"):
        smpl.load(path)


def test_nested_lists_sharing_memo_are_refused_before_conversion(tmp_path):
    # A few kB of pickle (lists referring to the same list) that numpy would expand to 30M floats.
    row = [0.0] * 1000
    path = tmp_path / "lists.pkl"
    write_pkl(path, dict(small_arrays(), v_template=[[row] * 1000] * 30))
    assert path.stat().st_size < 1_000_000
    with raises_naming(path, "v_template.*list"):
        smpl.load(path)
    peak = traced_peak(lambda: pytest.raises(ValueError, smpl.load, path))
    assert peak < 16 << 20


def test_truncated_and_corrupted_files(tmp_path):
    arrays = small_arrays()
    sources = {
        "n.npz": write_npz(tmp_path / "src.npz", arrays).read_bytes(),
        "c.npz": (np.savez_compressed(tmp_path / "srcc.npz", **arrays), (tmp_path / "srcc.npz").read_bytes())[1],
        "o.pkl": write_pkl(tmp_path / "src.pkl", dict(arrays, shapedirs=_Ch(arrays["shapedirs"]))).read_bytes(),
    }
    for name, raw in sources.items():
        for i, cut in enumerate([0, 3, 30, 100, len(raw) // 3, len(raw) // 2, len(raw) - 30, len(raw) - 1]):
            path = tmp_path / f"cut{i}_{name}"
            path.write_bytes(raw[:cut])
            with raises_naming(path):
                smpl.load(path)
        if name == "c.npz":  # the first member's deflate stream starting with an invalid block type
            bad = bytearray(raw)
            name_len, extra_len = struct.unpack_from("<2H", raw, 26)
            bad[30 + name_len + extra_len] = 0x07
            path = tmp_path / "blocktype.npz"
            path.write_bytes(bytes(bad))
            with raises_naming(path, "not a readable"):
                smpl.load(path)
        rng = np.random.default_rng(0)
        for i in range(12):  # flipped bytes in the data, not only at the end
            bad = bytearray(raw)
            at = int(rng.integers(len(raw) // 10, len(raw) * 9 // 10))
            bad[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
            path = tmp_path / f"flip{i}_{name}"
            path.write_bytes(bytes(bad))
            try:
                smpl.load(path)  # a flip inside float data may leave a loadable model
            except ValueError as e:
                assert path.name in str(e)


BAD_VALUES = {
    "string v_template": ("v_template", np.full((V, 3), "x"), "v_template.*dtype"),
    "bool weights": ("weights", np.ones((V, 24), bool), "weights.*dtype"),
    "complex posedirs": ("posedirs", np.zeros((V, 3, 207), complex), "posedirs.*dtype"),
    "structured shapedirs": ("shapedirs", np.zeros((V, 3, 10), "f8,f8"), "shapedirs.*dtype"),
    "NaN v_template": ("v_template", np.full((V, 3), np.nan), "v_template contains NaN"),
    "inf J_regressor": ("J_regressor", np.full((24, V), np.inf), "J_regressor contains NaN"),
    "negative face": ("f", np.full((4, 3), -1), r"f \(face vertex indices\)"),
    "face out of range": ("f", np.full((4, 3), V), r"f \(face vertex indices\)"),
    "fractional face": ("f", np.full((4, 3), 0.5), "f must hold integers"),
    "string faces": ("f", np.full((4, 3), "1"), "f.*dtype"),
    "root parent 7": ("kintree_table", np.array([[7] + list(skeleton.SMPL24_PARENTS[1:]), range(24)]), "joint 0"),
    "parent 99": ("kintree_table", np.array([[-1] + [99] * 23, range(24)]), "joint 1"),
    "child before parent": ("kintree_table", np.array([[-1, 2] + list(range(1, 23)), range(24)]), "joint 1"),
    "23 joint names": ("joint_names", np.array(skeleton.SMPL24_NAMES[:23]), r"joint_names must have shape \(24,\)"),
    "numeric joint names": ("joint_names", np.zeros(24), "joint_names.*strings"),
    "too many shape dirs": ("shapedirs", np.zeros((V, 3, 600)), "shapedirs must have shape"),
    "0-d v_template": ("v_template", np.float64(1.0), r"v_template must be \(V, 3\)"),
}


@pytest.mark.parametrize("kind", ["npz", "pkl"])
def test_bad_dtypes_and_values(tmp_path, kind):
    failures = []
    for i, (case, (key, value, match)) in enumerate(BAD_VALUES.items()):
        arrays = dict(small_arrays(), **{key: value})
        path = tmp_path / f"bad{i}.{kind}"
        if kind == "npz":
            np.savez(path, **arrays)
        else:
            write_pkl(path, arrays)
        try:
            smpl.load(path)
            failures.append(f"{case}: loaded")
        except ValueError as e:
            if path.name not in str(e) or not pytest.importorskip("re").search(match, str(e)):
                failures.append(f"{case}: {e}")
        except Exception as e:
            failures.append(f"{case}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def test_every_failure_is_a_value_error_naming_the_file(tmp_path):
    for name in ("missing.npz", "missing.pkl"):
        with pytest.raises(ValueError, match=f"not found: .*{name}"):
            smpl.load(tmp_path / name)
    folder = tmp_path / "folder.pkl"
    folder.mkdir()
    with raises_naming(folder):
        smpl.load(folder)
    for name, raw in [("list.pkl", pickle.dumps([1, 2])), ("empty.npz", b""), ("text.npz", b"hello")]:
        (tmp_path / name).write_bytes(raw)
        with raises_naming(tmp_path / name):
            smpl.load(tmp_path / name)
    with pytest.raises(ValueError, match="not found: .*missing.npy"):
        smpl.load_regressor(tmp_path / "missing.npy")


def test_regressor_files(tmp_path):
    good = np.eye(3, V)
    np.save(tmp_path / "ok.npy", good)
    np.testing.assert_array_equal(smpl.load_regressor(tmp_path / "ok.npy", 3, V), good.astype(np.float32))
    np.savez_compressed(tmp_path / "ok.npz", good)
    np.testing.assert_array_equal(smpl.load_regressor(tmp_path / "ok.npz", 3, V), good.astype(np.float32))
    huge = tmp_path / "huge.npy"
    huge.write_bytes(npy_bytes(good, shape=(10**6, 10**7)))
    with raises_naming(huge, "declares shape"):
        smpl.load_regressor(huge)
    huge_npz = write_npz(tmp_path / "huge.npz", {"arr_0": npy_bytes(good, shape=(10**6, 10**7))})
    with raises_naming(huge_npz, "declares shape"):
        smpl.load_regressor(huge_npz)
    bomb = _deflated_zeros_npz(tmp_path / "bomb.npz", "arr_0", (1024, 2**18), 2048)
    with raises_naming(bomb, "declares shape"):
        peak = traced_peak(lambda: smpl.load_regressor(bomb))
    peak = traced_peak(lambda: pytest.raises(ValueError, smpl.load_regressor, bomb))
    assert peak < 32 << 20
    cases = {
        "nan.npy": (np.full((3, V), np.nan), "NaN"),
        "strings.npy": (np.full((3, V), "a"), "dtype"),
        "three_d.npy": (np.zeros((3, V, 1)), "must be"),
    }
    for name, (arr, match) in cases.items():
        np.save(tmp_path / name, arr)
        with raises_naming(tmp_path / name, match):
            smpl.load_regressor(tmp_path / name)
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes((tmp_path / "ok.npy").read_bytes()[:-8])
    with raises_naming(trunc, "truncated"):
        smpl.load_regressor(trunc)

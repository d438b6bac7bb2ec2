"""Landmark vertices (OpenPose's nose, eyes, ears, toes and heels): the procedural body's, their
round trip through a model file, SMPL's defaults, bad landmark arrays and `smpl.take_vertices`."""

import pickle

import jax
import numpy as np
import pytest

from hmr_jax import body_model, skeleton, smpl

MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def body():
    return body_model.make_body_model(seed=0)


def landmarks_of(arrays) -> dict[str, int]:
    return dict(zip(arrays["landmark_names"].tolist(), arrays["landmark_vertices"].tolist()))


def model_arrays(num_vertices: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Well-formed SMPL-structured arrays of any size (float32: the 6,890-vertex one stays small)."""
    rng = np.random.default_rng(seed)
    v = num_vertices
    weights = rng.random((v, 24), np.float32)
    j_reg = rng.random((24, v), np.float32)
    return dict(
        v_template=rng.normal(0, 0.3, (v, 3)).astype(np.float32),
        shapedirs=np.zeros((v, 3, 10), np.float32),
        posedirs=np.zeros((v, 3, 207), np.float32),
        J_regressor=j_reg / j_reg.sum(1, keepdims=True),
        weights=weights / weights.sum(1, keepdims=True),
        kintree_table=np.stack([np.array(skeleton.SMPL24_PARENTS) % 2**32, np.arange(24)]).astype(np.uint32),
        f=rng.integers(0, v, (2 * v, 3)).astype(np.int32),
    )


# ------------------------------------------------------------------ the procedural body's landmarks


def test_procedural_body_names_every_landmark(body):
    lm = landmarks_of(body)
    assert tuple(lm) == skeleton.LANDMARK_NAMES
    assert body["landmark_vertices"].dtype == np.int64
    idx = np.array(list(lm.values()))
    assert len(set(idx.tolist())) == len(idx) and idx.min() >= 0 and idx.max() < len(body["v_template"])
    # The topology does not depend on the body, nor do the landmarks.
    assert landmarks_of(body_model.make_body_model(seed=3)) == lm


def test_procedural_landmarks_mirror(body):
    v, lm = body["v_template"], landmarks_of(body)
    for name in ("eye", "ear", "big_toe", "small_toe", "heel"):
        left, right = v[lm[f"left_{name}"]], v[lm[f"right_{name}"]]
        assert left[0] > 0.02, name  # the subject's left is +x
        np.testing.assert_allclose(right, left * MIRROR, atol=1e-6, err_msg=name)
    assert abs(v[lm["nose"], 0]) < 0.01  # the rings have no vertex on x = 0


def test_procedural_landmarks_sit_on_the_face_and_feet(body):
    v, lm, J = body["v_template"], landmarks_of(body), body["J"]
    p = {name: v[i] for name, i in lm.items()}
    head = v[(v[:, 1] > J[15, 1]) & (np.abs(v[:, 0]) < 0.15)]
    # Nose: the most forward point of the head, between chin and crown.
    assert p["nose"][2] > head[:, 2].max() - 1e-4
    assert J[15, 1] < p["nose"][1] < head[:, 1].max()
    # Eyes: above the nose, on the face, a few centimetres to either side.
    for side in ("left", "right"):
        eye = p[f"{side}_eye"]
        assert 0.02 < eye[1] - p["nose"][1] < 0.06
        assert 0.02 < abs(eye[0]) < 0.045 and 0 < eye[2] < p["nose"][2]
    # Ears: the head's most lateral points, behind the eyes, level with the nose.
    assert p["left_ear"][0] > head[:, 0].max() - 1e-4 and p["right_ear"][0] < head[:, 0].min() + 1e-4
    assert p["left_ear"][2] < p["left_eye"][2] and abs(p["left_ear"][1] - p["nose"][1]) < 0.03
    # Feet: toes in front of the heel, heels the lowest points, big toe inside the small toe.
    sole = v[:, 1].min()
    for side, sign in (("left", 1), ("right", -1)):
        big, small, heel = p[f"{side}_big_toe"], p[f"{side}_small_toe"], p[f"{side}_heel"]
        assert big[2] > small[2] > heel[2] + 0.15
        assert heel[1] < sole + 1e-3 and big[1] < J[7, 1] and small[1] < J[7, 1]
        assert sign * small[0] > sign * big[0] + 0.03
        foot = v[(sign * v[:, 0] > 0.03) & (v[:, 1] < J[7, 1] - 0.04)]
        assert big[2] > foot[:, 2].max() - 0.01 and heel[2] < foot[:, 2].min() + 0.01


def test_round_trip_through_the_file(tmp_path, body):
    path = body_model.write_body_model(tmp_path / "body.npz")
    model = smpl.load(path)
    assert model.landmarks == tuple(landmarks_of(body).items())
    nose = smpl.landmark_index(model, "nose")
    assert nose == landmarks_of(body)["nose"]

    @jax.jit
    def landmark_points(m, betas, pose):  # landmarks are static: indices known at trace time
        verts = smpl.forward(m, betas, pose).vertices
        return verts[:, [smpl.landmark_index(m, n) for n in skeleton.LANDMARK_NAMES]]

    out = landmark_points(model, np.zeros((1, 10), np.float32), np.zeros((1, 72), np.float32))
    np.testing.assert_allclose(out[0], body["v_template"][body["landmark_vertices"]], atol=1e-5)


# ------------------------------------------------------------------ other files


def test_smpl_sized_model_without_landmarks_gets_smpls(tmp_path):
    np.savez(tmp_path / "smpl_like.npz", **model_arrays(smpl.SMPL_NUM_VERTICES))
    model = smpl.load(tmp_path / "smpl_like.npz")
    assert model.landmarks == smpl.SMPL_LANDMARKS
    assert tuple(name for name, _ in smpl.SMPL_LANDMARKS) == skeleton.LANDMARK_NAMES
    assert smpl.landmark_index(model, "left_heel") == 3387
    # Another topology names none unless its file does; an empty pair of arrays names none.
    arrays = model_arrays(30)
    assert smpl.from_arrays(**arrays).landmarks == ()
    empty = dict(landmark_names=np.array([], str), landmark_vertices=np.array([], np.int64))
    assert smpl.from_arrays(**model_arrays(smpl.SMPL_NUM_VERTICES), **empty).landmarks == ()
    with pytest.raises(ValueError, match=r"'nose'.*\[\].*landmark_names / landmark_vertices"):
        smpl.landmark_index(smpl.from_arrays(**arrays), "nose")


def test_landmarks_in_a_pickle(tmp_path):
    arrays = dict(model_arrays(30), landmark_names=["nose", b"left_heel"], landmark_vertices=[4, 29])
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    model = smpl.load(path)
    assert model.landmarks == (("nose", 4), ("left_heel", 29))
    with pytest.raises(ValueError, match=r"'right_ear': not among this body model's landmarks \['nose', 'left_heel'\]"):
        smpl.landmark_index(model, "right_ear")


BAD_LANDMARKS = {
    "index out of range": (["nose", "left_eye"], np.array([3, 30]), r"landmark_vertices must lie in \[0, 30\).*30.*left_eye"),
    "negative index": (["nose"], np.array([-1]), r"landmark_vertices must lie in \[0, 30\)"),
    "length mismatch": (["nose", "left_eye"], np.array([3]), r"landmark_vertices must have shape \(2,\)"),
    "duplicate names": (["nose", "nose"], np.array([3, 4]), "unique.*'nose'"),
    "empty name": (["nose", ""], np.array([3, 4]), "non-empty"),
    "fractional index": (["nose"], np.array([2.5]), "landmark_vertices must hold integers"),
    "numeric names": (np.array([1.0, 2.0]), np.array([3, 4]), "landmark_names.*strings"),
    "2-d names": (np.array([["nose"]]), np.array([3]), "landmark_names must have shape"),
    "names too long": (["n" * 300], np.array([3]), "longer than 256"),
    "names without vertices": (["nose"], None, "landmark_names without landmark_vertices"),
    "vertices without names": (None, np.array([3]), "landmark_vertices without landmark_names"),
}  # fmt: skip


@pytest.mark.parametrize("kind", ["npz", "pkl"])
@pytest.mark.parametrize("case", list(BAD_LANDMARKS))
def test_bad_landmark_arrays_are_value_errors_naming_the_file(tmp_path, case, kind):
    names, vertices, match = BAD_LANDMARKS[case]
    arrays = model_arrays(30)
    if names is not None:
        arrays["landmark_names"] = np.asarray(names)
    if vertices is not None:
        arrays["landmark_vertices"] = vertices
    path = tmp_path / f"bad model.{kind}"
    if kind == "npz":
        np.savez(path, **arrays)
    else:
        path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(ValueError, match=rf"bad model\.{kind}.*{match}"):
        smpl.load(path)


def test_from_arrays_checks_landmarks():
    arrays = model_arrays(30)
    with pytest.raises(ValueError, match="same length, found 2 names and 1 vertices"):
        smpl.from_arrays(**arrays, landmark_names=["a", "b"], landmark_vertices=[1])
    with pytest.raises(ValueError, match=r"\[0, 30\).*found 30 for 'b'"):
        smpl.from_arrays(**arrays, landmark_names=["a", "b"], landmark_vertices=[1, 30])
    with pytest.raises(ValueError, match="'a' more than once"):
        smpl.from_arrays(**arrays, landmark_names=["a", "a"], landmark_vertices=[1, 2])
    with pytest.raises(ValueError, match="landmark_vertices given without landmark_names"):
        smpl.from_arrays(**arrays, landmark_vertices=[1])
    model = smpl.from_arrays(**arrays, landmark_names=["a", "b"], landmark_vertices=np.array([1.0, 2.0]))
    assert model.landmarks == (("a", 1), ("b", 2)) and isinstance(model.landmarks[0][1], int)


def test_take_vertices_renumbers_and_drops_landmarks():
    arrays = model_arrays(30)
    model = smpl.from_arrays(**arrays, landmark_names=["a", "b", "c"], landmark_vertices=[3, 10, 29])
    sub = smpl.take_vertices(model, np.array([0, 2, 10, 20, 29]))
    assert sub.landmarks == (("b", 2), ("c", 4))
    np.testing.assert_array_equal(sub.v_template[smpl.landmark_index(sub, "c")], model.v_template[29])
    with pytest.raises(ValueError, match=r"'a'.*\['b', 'c'\]"):
        smpl.landmark_index(sub, "a")
    assert smpl.take_vertices(model, np.arange(30)).landmarks == model.landmarks

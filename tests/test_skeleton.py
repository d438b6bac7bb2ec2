"""Joint sets, flips and limits (hmr_jax.skeleton)."""

import pytest

from hmr_jax import skeleton


def test_joint_sets_consistent():
    for name, js in skeleton.JOINT_SETS.items():
        n = js.num_joints
        assert len(js.flip_perm) == n and len(js.parents) == n
        assert sorted(js.flip_perm) == list(range(n)), name
        assert all(js.flip_perm[js.flip_perm[i]] == i for i in range(n)), name  # involution
        for i, j in enumerate(js.flip_perm):  # left <-> right names
            a, b = js.names[i], js.names[j]
            assert a.replace("left", "X").replace("right", "left").replace("X", "right") == b, (name, a, b)
    assert skeleton.JOINT_SETS["smpl24"].pelvis_index == 0
    assert skeleton.JOINT_SETS["spin24"].names[skeleton.JOINT_SETS["spin24"].pelvis_index] == "pelvis_mpii"
    assert skeleton.H36M_TO_J14 == (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
    with pytest.raises(ValueError, match="joint_set"):
        skeleton.get_joint_set("coco")


def test_joint_limits_cover_the_23_body_joints():
    idx = [lim[0] for lim in skeleton.ANGLE_LIMITS_DEG] + [lim[0] for lim in skeleton.HINGE_LIMITS_DEG]
    assert sorted(idx) == list(range(1, 24))
    for lim in skeleton.ANGLE_LIMITS_DEG + skeleton.HINGE_LIMITS_DEG:
        assert skeleton.SMPL24_NAMES[lim[0]] == lim[1]

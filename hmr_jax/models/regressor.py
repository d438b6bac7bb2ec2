"""HMR's iterative error feedback (IEF) regressor in Flax NNX.

Starting from the mean parameters (theta_0, beta_0, cam_0), every iteration t computes

    [theta, beta, cam]_{t+1} = [theta, beta, cam]_t + MLP(concat(features, theta_t, beta_t, cam_t))

with MLP = Linear(1024) -> ReLU -> Dropout -> Linear(1024) -> ReLU -> Dropout -> Linear
(`hidden_activation='none'` drops the ReLUs: SPIN's regressor has none; the last layer
initialised small: Xavier-uniform with gain 0.01, as SPIN), `n_iter` times (5 in the report).
`hidden=()` turns the MLP into a single linear layer (with `n_iter=1`: the "linear head" of the
report's Table 1 first rows).

Rotation representation of theta (`rot_repr`):
  'aa' -- 24 axis-angle vectors, 72 numbers (the report's);
  '6d' -- 24 x 6 (Zhou et al.; first two columns of R, concatenated), 144 numbers (as SPIN's
  output; SPIN orders each joint's six row by row, (R00, R01, R10, ...): `mean_pose_from_file`).
Both are converted to rotation matrices with `hmr_jax.geometry`.

The mean parameters are fixed (not trained): they are stored as static tuples of floats on the
module (part of the graphdef, not of the state), so `nnx.split(model, nnx.Param, nnx.BatchStat)`
holds everything that changes.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float
from scipy.spatial.transform import Rotation

from hmr_jax import geometry

NUM_JOINTS = 24
NUM_BETAS = 10
NUM_CAM = 3
ROT_DIMS = {"aa": 3, "6d": 6}
HIDDEN_ACTIVATIONS = ("relu", "none")


def default_mean_params(rot_repr: str = "aa") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fallback mean parameters when no SMPL mean file is given.

    Pose: global orientation 180 deg about x (an upright body seen by the OpenCV-style camera, as
    in SPIN's data), identity for the 23 body joints; betas zero; cam (0.9, 0, 0) (about SPIN's
    mean camera). Returned in `rot_repr` ((72,) axis-angle or (144,) 6d), (10,), (3,).
    """
    aa = np.zeros((NUM_JOINTS, 3), np.float32)
    aa[0, 0] = np.pi
    pose = convert_mean_pose(aa, rot_repr)
    return pose, np.zeros(NUM_BETAS, np.float32), np.array([0.9, 0.0, 0.0], np.float32)


def convert_mean_pose(mean_pose: Any, rot_repr: str) -> np.ndarray:
    """Mean pose given as axis-angle ((72,) or (24,3)) or 6d in the model's layout ((144,) or (24,6);
    `geometry.matrix_to_rot6d`) -> flat `rot_repr` (6d to 6d: the numbers unchanged). A file's 6d
    pose (SPIN's layout): `mean_pose_from_file`."""
    if rot_repr not in ROT_DIMS:
        raise ValueError(f"rot_repr must be one of {sorted(ROT_DIMS)}, found {rot_repr!r}")
    pose = np.asarray(mean_pose, np.float32)
    if pose.size not in (NUM_JOINTS * 3, NUM_JOINTS * 6):
        raise ValueError(
            "mean_pose: expected 24 axis-angle vectors ((72,) or (24,3)) or 24 6d rotations "
            f"((144,) or (24,6)), found shape {pose.shape}"
        )
    # numpy/scipy (not jax): concrete values even when the model is built under jit/eval_shape,
    # and no XLA compilation at construction. Same conventions as hmr_jax.geometry.
    if pose.size == NUM_JOINTS * 6 and rot_repr == "6d":
        return pose.reshape(-1)  # kept as given (e.g. an imported checkpoint's), not re-orthogonalised
    if pose.size == NUM_JOINTS * 3:
        rotmat = Rotation.from_rotvec(pose.reshape(NUM_JOINTS, 3).astype(np.float64)).as_matrix()
    else:
        rotmat = _rot6d_to_matrix_np(pose.reshape(NUM_JOINTS, 6).astype(np.float64))
    if rot_repr == "aa":
        out = Rotation.from_matrix(rotmat).as_rotvec()
    else:
        out = np.concatenate([rotmat[:, :, 0], rotmat[:, :, 1]], axis=-1)  # geometry.matrix_to_rot6d
    return np.asarray(out, np.float32).reshape(-1)


def mean_pose_from_file(pose: Any) -> np.ndarray:
    """A mean-parameter file's `pose` -> (72,) axis-angle.

    (72,) / (24, 3): axis-angle, kept. (144,) / (24, 6): 6d in **SPIN's layout**, as its
    data/smpl_mean_params.npz stores them: per joint the first two columns of R as a 3 x 2 matrix in
    row-major order, (R00, R01, R10, R11, R20, R21) (SPIN reads them with `x.view(-1, 3, 2)`). This
    is not the model's own 6d layout (`geometry.matrix_to_rot6d`: the columns concatenated), in which
    such a file would read as other rotations, or as none (a 180-degree global orientation,
    diag(1, -1, -1), would give two parallel columns). A joint whose two columns are parallel or zero
    is an error."""
    pose = np.asarray(pose, np.float64)
    if pose.size == NUM_JOINTS * 3:
        return pose.reshape(-1).astype(np.float32)
    if pose.size != NUM_JOINTS * 6:
        raise ValueError(
            "pose: expected 24 axis-angle vectors ((72,) or (24,3)) or 24 6d rotations in SPIN's "
            f"layout ((144,) or (24,6)), found shape {pose.shape}"
        )
    cols = pose.reshape(NUM_JOINTS, 3, 2)  # SPIN's x.view(-1, 3, 2): column k of joint j is cols[j, :, k]
    a1, a2 = cols[:, :, 0], cols[:, :, 1]
    n1, n2 = np.linalg.norm(a1, axis=-1), np.linalg.norm(a2, axis=-1)
    sin = np.linalg.norm(np.cross(a1, a2), axis=-1) / np.maximum(n1 * n2, 1e-12)
    bad = np.flatnonzero((n1 < 1e-6) | (n2 < 1e-6) | (sin < 1e-3))
    if bad.size:
        raise ValueError(
            f"pose: the 6d rotation of joint(s) {bad.tolist()} has two parallel or zero columns in "
            "SPIN's layout ((R00, R01, R10, R11, R20, R21) per joint): not a rotation"
        )
    return convert_mean_pose(np.concatenate([a1, a2], axis=-1), "aa")  # the model's layout -> axis-angle


def _rot6d_to_matrix_np(x: np.ndarray) -> np.ndarray:
    """numpy twin of `geometry.rot6d_to_matrix` (Gram-Schmidt of the two columns)."""
    a1, a2 = x[:, 0:3], x[:, 3:6]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-8)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-8)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def theta_to_rotmat(theta: Float[Array, "*batch p"], rot_repr: str) -> Float[Array, "*batch 24 3 3"]:
    """Flat theta in `rot_repr` (..., 72) or (..., 144) -> rotation matrices (..., 24, 3, 3)."""
    d = ROT_DIMS[rot_repr]
    x = theta.reshape(theta.shape[:-1] + (NUM_JOINTS, d))
    if rot_repr == "aa":
        return geometry.axis_angle_to_matrix(x)
    return geometry.rot6d_to_matrix(x)


class Regressor(nnx.Module):
    """Iterative regressor: features (B, F) -> per-iteration theta, betas, cam, rotation matrices.

    Args:
      in_features: size F of the image features.
      mean_pose: axis-angle ((72,) / (24,3)) or 6d ((144,) / (24,6)); converted to `rot_repr`.
      mean_betas: (10,).  mean_cam: (3,) weak-perspective (s, tx, ty).
      rot_repr: 'aa' or '6d'.
      hidden: widths of the hidden layers, (1024, 1024) for HMR; () for a linear head.
      hidden_activation: 'relu' after each hidden layer (HMR) or 'none' (SPIN's regressor).
      dropout: dropout rate after each hidden layer (SPIN: 0.5).
      n_iter: number of IEF iterations (5 in the report).
      final_init_gain: Xavier-uniform gain of the last layer (0.01 as SPIN; 0.0 -> zeros, so
        the untrained regressor returns the mean parameters exactly).
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        in_features: int,
        mean_pose: Any,
        mean_betas: Any,
        mean_cam: Any,
        *,
        rot_repr: str = "aa",
        hidden: Sequence[int] = (1024, 1024),
        hidden_activation: str = "relu",
        dropout: float = 0.5,
        n_iter: int = 5,
        final_init_gain: float = 0.01,
        rngs: nnx.Rngs,
    ):
        if n_iter < 1:
            raise ValueError(f"Regressor: n_iter must be >= 1, found {n_iter}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Regressor: dropout must be in [0, 1), found {dropout}")
        if hidden_activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(
                f"Regressor: hidden_activation must be one of {HIDDEN_ACTIVATIONS}, found {hidden_activation!r}"
            )
        pose = convert_mean_pose(mean_pose, rot_repr)
        betas = np.asarray(mean_betas, np.float32).reshape(-1)
        cam = np.asarray(mean_cam, np.float32).reshape(-1)
        if betas.shape != (NUM_BETAS,):
            raise ValueError(f"Regressor: mean_betas must have {NUM_BETAS} values, found shape {betas.shape}")
        if cam.shape != (NUM_CAM,):
            raise ValueError(f"Regressor: mean_cam must have {NUM_CAM} values, found shape {cam.shape}")
        self.rot_repr = rot_repr
        self.n_pose = pose.size
        self.n_iter = int(n_iter)
        self.dropout_rate = float(dropout)
        self.hidden_activation = hidden_activation
        # Static (graphdef) constants: fixed, never trained.
        self.mean_params = tuple(float(v) for v in np.concatenate([pose, betas, cam]))
        n_out = len(self.mean_params)
        widths = (in_features + n_out, *hidden)
        self.num_hidden = len(hidden)
        for i in range(self.num_hidden):  # fc1, fc2, ... (string keys in the state)
            setattr(self, f"fc{i + 1}", nnx.Linear(widths[i], widths[i + 1], rngs=rngs))
        self.dropout = nnx.Dropout(dropout)
        if final_init_gain == 0.0:
            final_init = nnx.initializers.zeros
        else:
            final_init = nnx.initializers.variance_scaling(final_init_gain**2, "fan_avg", "uniform")
        self.out = nnx.Linear(widths[-1], n_out, kernel_init=final_init, rngs=rngs)

    def __call__(self, features: Float[Array, "b f"], *, train: bool, rng: jax.Array | None = None) -> dict[str, Array]:
        """Run `n_iter` iterations.

        Args:
          features: (B, F) image features.
          train: dropout active when True (then `rng`, a jax PRNG key, is required if the
            dropout rate is non-zero).

        Returns dict of per-iteration stacks: theta (n_iter, B, 72|144), betas (n_iter, B, 10),
        cam (n_iter, B, 3), pose_rotmat (n_iter, B, 24, 3, 3).
        """
        features = features.astype(jnp.float32)
        b = features.shape[0]
        use_dropout = train and self.dropout_rate > 0.0 and self.num_hidden > 0
        if use_dropout and rng is None:
            raise ValueError("Regressor: train=True with dropout needs a PRNG key `rng`, found None")
        keys = jax.random.split(rng, self.n_iter * self.num_hidden) if use_dropout else None
        params = jnp.broadcast_to(jnp.asarray(self.mean_params, jnp.float32), (b, len(self.mean_params)))
        stack = []
        for it in range(self.n_iter):
            x = jnp.concatenate([features, params], axis=-1)  # (B, F + n_out)
            for i in range(self.num_hidden):
                x = getattr(self, f"fc{i + 1}")(x)  # (B, hidden[i])
                if self.hidden_activation == "relu":
                    x = nnx.relu(x)
                if use_dropout:
                    x = self.dropout(x, deterministic=False, rngs=keys[it * self.num_hidden + i])
            params = params + self.out(x)  # (B, n_out)
            stack.append(params)
        allp = jnp.stack(stack)  # (n_iter, B, n_out)
        theta = allp[..., : self.n_pose]
        return {
            "theta": theta,
            "betas": allp[..., self.n_pose : self.n_pose + NUM_BETAS],
            "cam": allp[..., self.n_pose + NUM_BETAS :],
            "pose_rotmat": theta_to_rotmat(theta, self.rot_repr),
        }

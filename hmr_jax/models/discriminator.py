"""HMR's adversarial prior: an ensemble of 25 discriminators in one Flax NNX module.

Inputs: the rotation matrices of the 23 body joints (B, 23, 3, 3) -- SMPL joints 1..23, the
global orientation (joint 0) is excluded -- and the shape coefficients betas (B, 10).

  per joint  : R_j flattened to 9 -> FC 32 -> ReLU -> FC 32 -> ReLU (weights shared by all joints,
               HMR's 1x1 convolutions) -> one linear output per joint (23 separate weight
               vectors, held as one (23, 32) array)                               -> 23 logits
  whole pose : the 23 x 32 joint features concatenated (736) -> FC 1024 -> ReLU
               -> FC 1024 -> ReLU -> FC 1                                         ->  1 logit
  shape      : betas 10 -> FC 10 -> ReLU -> FC 5 -> ReLU -> FC 1                 ->  1 logit

Output (B, 25) raw scores, no sigmoid (least-squares GAN, equations (7)-(8) of the report),
in the order

    [:, 0:23]  per-joint discriminators, SMPL joints 1..23 in order
    [:, 23]    whole-pose discriminator
    [:, 24]    shape discriminator
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

NUM_BODY_JOINTS = 23
NUM_DISCRIMINATORS = NUM_BODY_JOINTS + 2
POSE_INDEX = NUM_BODY_JOINTS  # column of the whole-pose discriminator
SHAPE_INDEX = NUM_BODY_JOINTS + 1  # column of the shape discriminator


class _ReluMLP(nnx.Module):
    """Linear -> ReLU layers fc1, fc2, ... (string keys in the state)."""

    def __init__(self, widths: Sequence[int], rngs: nnx.Rngs):
        self.num_layers = len(widths) - 1
        for i in range(self.num_layers):
            setattr(self, f"fc{i + 1}", nnx.Linear(widths[i], widths[i + 1], rngs=rngs))

    def __call__(self, x: Array) -> Array:
        for i in range(self.num_layers):
            x = nnx.relu(getattr(self, f"fc{i + 1}")(x))
        return x


class Discriminator(nnx.Module):
    """25 discriminators (23 joints, whole pose, shape) -> (B, 25) logits; see module docstring.

    Args:
      joint_hidden: widths of the shared per-joint layers (HMR: (32, 32)).
      pose_hidden: widths of the whole-pose layers (HMR: (1024, 1024)).
      shape_hidden: widths of the shape layers (HMR: (10, 5)).
      num_betas: shape coefficients (10).
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        *,
        joint_hidden: Sequence[int] = (32, 32),
        pose_hidden: Sequence[int] = (1024, 1024),
        shape_hidden: Sequence[int] = (10, 5),
        num_betas: int = 10,
        rngs: nnx.Rngs,
    ):
        self.num_betas = num_betas
        self.joint_mlp = _ReluMLP((9, *joint_hidden), rngs)
        c = joint_hidden[-1]
        # One linear output per joint, batched: (23, C) weights and (23,) biases.
        self.joint_out_kernel = nnx.Param(
            nnx.initializers.lecun_normal(in_axis=-1, out_axis=-2)(rngs.params(), (NUM_BODY_JOINTS, c))
        )
        self.joint_out_bias = nnx.Param(jnp.zeros((NUM_BODY_JOINTS,)))
        self.pose_mlp = _ReluMLP((NUM_BODY_JOINTS * c, *pose_hidden), rngs)
        self.pose_out = nnx.Linear(pose_hidden[-1], 1, rngs=rngs)
        self.shape_mlp = _ReluMLP((num_betas, *shape_hidden), rngs)
        self.shape_out = nnx.Linear(shape_hidden[-1], 1, rngs=rngs)

    def __call__(self, pose_rotmat: Float[Array, "b 23 3 3"], betas: Float[Array, "b k"]) -> Float[Array, "b 25"]:
        if pose_rotmat.ndim != 4 or pose_rotmat.shape[1:] != (NUM_BODY_JOINTS, 3, 3):
            raise ValueError(
                "Discriminator: pose_rotmat must be (B, 23, 3, 3) (body joints 1..23, without the "
                f"global orientation), found {pose_rotmat.shape}"
            )
        if betas.ndim != 2 or betas.shape[1] != self.num_betas or betas.shape[0] != pose_rotmat.shape[0]:
            raise ValueError(
                f"Discriminator: betas must be (B, {self.num_betas}) with B = {pose_rotmat.shape[0]}, "
                f"found {betas.shape}"
            )
        b = pose_rotmat.shape[0]
        x = pose_rotmat.reshape(b, NUM_BODY_JOINTS, 9).astype(jnp.float32)
        feats = self.joint_mlp(x)  # (B, 23, C)
        joint_logits = jnp.einsum("bjc,jc->bj", feats, self.joint_out_kernel[...]) + self.joint_out_bias[...]
        pose_logit = self.pose_out(self.pose_mlp(feats.reshape(b, -1)))  # (B, 1)
        shape_logit = self.shape_out(self.shape_mlp(betas.astype(jnp.float32)))  # (B, 1)
        return jnp.concatenate([joint_logits, pose_logit, shape_logit], axis=-1)  # (B, 25)

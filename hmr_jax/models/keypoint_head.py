"""2D keypoint head: ResNet stage maps -> heatmaps -> soft-argmax keypoints (normalised coordinates).

An optional part of the generator (config `model.keypoint_head`): it gives the regressor explicit
2D evidence. HMR's regressor sees only the pooled 2048-d feature and must learn where the joints
are *and* how 2D positions lift to 3D from the 3D losses alone; on the quickstart's budget it
learns neither well (with exact 2D keypoints concatenated to its input the regressor halves its
error within 1,000 steps). The head is a small FPN-like
top-down path (as Lin et al. 2017, without batch norm):

    stage 4 (stride 32) --1x1--> C --up2x--+ stage 3 --1x1--> C --up2x--+ stage 2 --1x1--> C
      -> ReLU -> 3x3 C -> ReLU [--up2x--+ stage 1 --1x1--> C -> ReLU, with stride 4]
      -> 1x1 J logits at stride 8 (or 4) -> soft-argmax over each map

(ReLU after each merge). At stride 4 the 3x3 mix stays at stride 8, where it costs a quarter
(its 24 x 24 version doubled the quickstart encoder's FLOPs for the same accuracy), and stage 1's 1x1 projection refines the upsampled maps. The keypoints (B, J, 2)
in [-1, 1] crop coordinates (those of `losses.normalize_keypoints`: x_norm = 2 x_px / img_size
- 1) are concatenated to the pooled features the regressor reads. Soft-argmax (the expectation
of the cell centres under a softmax over each map) is differentiable, so the head trains from
an L1 loss on the keypoints (`losses.keypoints_l1_loss`) without heatmap targets;
`losses.keypoint_heatmap_loss` can also pull each map towards a Gaussian around the true joint
(as DSNT, Nibali et al. 2018), which keeps the maps single-peaked: a map with two modes has its
soft-argmax between them.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from hmr_jax.models import cpu_kernels


def soft_argmax(logits: Float[Array, "b h w j"]) -> Float[Array, "b j 2"]:
    """Per-map expectation of the cell centres under softmax(logits) -> (x, y) in [-1, 1].

    Cell (row r, column c) of an h x w map covering the crop has its centre at
    x = 2 (c + 0.5) / w - 1, y = 2 (r + 0.5) / h - 1 (the crop's pixel grid scaled down).
    Computed in float32 whatever the input dtype.
    """
    b, h, w, j = logits.shape
    prob = jax.nn.softmax(logits.astype(jnp.float32).reshape(b, h * w, j), axis=1).reshape(b, h, w, j)
    xs = 2.0 * (jnp.arange(w, dtype=jnp.float32) + 0.5) / w - 1.0  # (w,)
    ys = 2.0 * (jnp.arange(h, dtype=jnp.float32) + 0.5) / h - 1.0  # (h,)
    x = jnp.einsum("bhwj,w->bj", prob, xs)
    y = jnp.einsum("bhwj,h->bj", prob, ys)
    return jnp.stack([x, y], axis=-1)


def _upsample_to(x: Array, shape: Sequence[int]) -> Array:
    """Nearest-neighbour resize of (B, h, w, C) to (B, H, W, C) (2x at even sizes; odd sizes too).
    An exact 2x is a broadcast and reshape (each cell repeated 2 x 2: what `jax.image.resize`'s
    nearest gives there), whose gradient is a sum over the 2 x 2 block rather than a scatter."""
    b, h, w, c = x.shape
    target = (b, shape[1], shape[2], c)
    if target == x.shape:
        return x
    if target[1:3] == (2 * h, 2 * w):
        return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(target)
    return jax.image.resize(x, target, method="nearest")


STRIDES = (4, 8)  # of the heatmaps: stage 1's or stage 2's resolution


class KeypointHead(nnx.Module):
    """Stage maps (the ResNet's 4; stages 2-4 are read, and stage 1 too at stride 4) -> keypoints
    (B, J, 2) in [-1, 1].

    Args:
      stage_channels: channels of the ResNet's four stages (`ResNet.stage_channels`).
      num_keypoints: J, the dataset's joints (24 for both training joint sets).
      channels: width C of the top-down path (32 on the quickstart).
      stride: of the heatmaps, 8 (stage 2's resolution) or 4 (stage 1's: one more merge; finer
        maps, e.g. 24 x 24 cells on 96 px crops).
      dtype: compute dtype of the convolutions (the encoder's); the soft-argmax is float32.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        num_keypoints: int,
        *,
        channels: int = 32,
        stride: int = 8,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if len(stage_channels) != 4:
            raise ValueError(f"KeypointHead: expected the 4 stages' channels, found {tuple(stage_channels)}")
        if num_keypoints < 1 or channels < 1:
            raise ValueError(
                f"KeypointHead: num_keypoints and channels must be positive, found {num_keypoints}, {channels}"
            )
        if stride not in STRIDES:
            raise ValueError(f"KeypointHead: stride must be one of {STRIDES}, found {stride!r}")
        self.num_keypoints = int(num_keypoints)
        conv1 = lambda i, o: cpu_kernels.PointwiseConv(i, o, (1, 1), dtype=dtype, rngs=rngs)  # noqa: E731
        self.lateral1 = conv1(stage_channels[0], channels) if stride == 4 else None
        self.lateral2 = conv1(stage_channels[1], channels)
        self.lateral3 = conv1(stage_channels[2], channels)
        self.lateral4 = conv1(stage_channels[3], channels)
        self.mix = cpu_kernels.Conv3x3(channels, channels, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
        self.out = conv1(channels, num_keypoints)

    def logits(self, stages: Sequence[Array]) -> Float[Array, "b h w j"]:
        """The J heatmap logits at stage 2's resolution (stride 8) or stage 1's (stride 4)."""
        s1, s2, s3, s4 = stages
        y = nnx.relu(self.lateral4(s4))  # (B, H/32, W/32, C)
        y = nnx.relu(_upsample_to(y, s3.shape) + self.lateral3(s3))  # (B, H/16, W/16, C)
        y = nnx.relu(_upsample_to(y, s2.shape) + self.lateral2(s2))  # (B, H/8, W/8, C)
        y = nnx.relu(self.mix(y))
        if self.lateral1 is not None:
            y = nnx.relu(_upsample_to(y, s1.shape) + self.lateral1(s1))  # (B, H/4, W/4, C)
        return self.out(y)  # (B, H/stride, W/stride, J)

    def __call__(self, stages: Sequence[Array]) -> Float[Array, "b j 2"]:
        return soft_argmax(self.logits(stages))


__all__ = ["STRIDES", "KeypointHead", "soft_argmax"]

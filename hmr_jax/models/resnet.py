"""ResNet-18/34/50 image encoders (torchvision architecture, NHWC) in Flax NNX.

Architecture as torchvision's `resnet18/34/50` (ResNet v1.5): 7x7 stride-2 stem convolution,
3x3 stride-2 max pool, four stages of BasicBlocks (18, 34) or Bottlenecks (50, stride on the 3x3
convolution), 1x1 projection shortcuts where the shape changes, global average pooling. The
classifier (`fc`) is not part of the encoder: the output is the pooled feature vector (B, C),
C = 8 * width * expansion (512 for ResNet-18/34, 2048 for ResNet-50 at the default width 64).

Parameter paths mirror torchvision's names so weights convert one to one
(`tools/convert_resnet50_weights.py`):

    torchvision                       here (nested dict keys)
    conv1.weight                      conv1/kernel
    bn1.{weight,bias}                 bn1/{scale,bias}              (params)
    bn1.{running_mean,running_var}    bn1/{mean,var}                (batch_stats)
    layer2.0.conv1.weight             layer2/block0/conv1/kernel
    layer2.0.downsample.0.weight      layer2/block0/downsample_conv/kernel
    layer2.0.downsample.1.*           layer2/block0/downsample_bn/*

Training speed on CPU: the convolutions, BatchNorms and the max pool are the exact equivalents
with hand-written gradients of `hmr_jax.models.cpu_kernels` (same parameters, values and gradients
as the plain flax ops, faster on XLA:CPU).

Extra knobs for small runs: `width` (channels of the first stage, 64 for the standard nets,
e.g. 16 for a tiny CPU net) and `dtype` (compute dtype, e.g. bfloat16; parameters and batch
statistics stay float32 and the pooled features are returned in float32).
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from hmr_jax.models import cpu_kernels

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
_BN_EPS = 1e-5  # torch default


def _conv(
    in_ch: int, out_ch: int, k: int, stride: int, dtype: Any, rngs: nnx.Rngs, cls: type | None = None
) -> nnx.Conv:
    pad = (k - 1) // 2  # torch padding: symmetric (k-1)/2, unlike 'SAME' at stride 2
    cls = cls or {1: cpu_kernels.PointwiseConv, 3: cpu_kernels.Conv3x3}.get(k, nnx.Conv)
    return cls(
        in_ch,
        out_ch,
        (k, k),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        kernel_init=_CONV_INIT,
        rngs=rngs,
    )


def _bn(ch: int, dtype: Any, momentum: float, rngs: nnx.Rngs, zero_scale: bool = False) -> cpu_kernels.BatchNorm:
    return cpu_kernels.BatchNorm(
        ch,
        momentum=momentum,
        epsilon=_BN_EPS,
        dtype=dtype,
        scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        ch: int,
        stride: int,
        *,
        dtype: Any,
        bn_momentum: float,
        zero_init_residual: bool,
        rngs: nnx.Rngs,
    ):
        out_ch = ch * self.expansion
        self.conv1 = _conv(in_ch, ch, 3, stride, dtype, rngs)
        self.bn1 = _bn(ch, dtype, bn_momentum, rngs)
        self.conv2 = _conv(ch, out_ch, 3, 1, dtype, rngs)
        self.bn2 = _bn(out_ch, dtype, bn_momentum, rngs, zero_scale=zero_init_residual)
        _add_downsample(self, in_ch, out_ch, stride, dtype, bn_momentum, rngs)

    def __call__(self, x: Array, *, train: bool) -> Array:
        ura = not train
        y = self.bn1(self.conv1(x), ura, relu=True)
        return self.bn2(self.conv2(y), ura, residual=_shortcut(self, x, train), relu=True)


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 x4 (ResNet-50)."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        ch: int,
        stride: int,
        *,
        dtype: Any,
        bn_momentum: float,
        zero_init_residual: bool,
        rngs: nnx.Rngs,
    ):
        out_ch = ch * self.expansion
        self.conv1 = _conv(in_ch, ch, 1, 1, dtype, rngs)
        self.bn1 = _bn(ch, dtype, bn_momentum, rngs)
        self.conv2 = _conv(ch, ch, 3, stride, dtype, rngs)
        self.bn2 = _bn(ch, dtype, bn_momentum, rngs)
        self.conv3 = _conv(ch, out_ch, 1, 1, dtype, rngs)
        self.bn3 = _bn(out_ch, dtype, bn_momentum, rngs, zero_scale=zero_init_residual)
        _add_downsample(self, in_ch, out_ch, stride, dtype, bn_momentum, rngs)

    def __call__(self, x: Array, *, train: bool) -> Array:
        ura = not train
        y = self.bn1(self.conv1(x), ura, relu=True)
        y = self.bn2(self.conv2(y), ura, relu=True)
        return self.bn3(self.conv3(y), ura, residual=_shortcut(self, x, train), relu=True)


def _add_downsample(
    block: nnx.Module, in_ch: int, out_ch: int, stride: int, dtype: Any, bn_momentum: float, rngs: nnx.Rngs
) -> None:
    if stride != 1 or in_ch != out_ch:
        block.downsample_conv = _conv(in_ch, out_ch, 1, stride, dtype, rngs)
        block.downsample_bn = _bn(out_ch, dtype, bn_momentum, rngs)
    else:
        block.downsample_conv = None
        block.downsample_bn = None


def _shortcut(block: nnx.Module, x: Array, train: bool) -> Array:
    if block.downsample_conv is None:
        return x
    return block.downsample_bn(block.downsample_conv(x), use_running_average=not train)


class Stage(nnx.Module):
    """A sequence of residual blocks, stored as attributes block0, block1, ... (string keys)."""

    def __init__(
        self,
        block_cls: type,
        in_ch: int,
        ch: int,
        num_blocks: int,
        stride: int,
        *,
        dtype: Any,
        bn_momentum: float,
        zero_init_residual: bool,
        rngs: nnx.Rngs,
    ):
        self.num_blocks = num_blocks
        for i in range(num_blocks):
            block = block_cls(
                in_ch,
                ch,
                stride if i == 0 else 1,
                dtype=dtype,
                bn_momentum=bn_momentum,
                zero_init_residual=zero_init_residual,
                rngs=rngs,
            )
            setattr(self, f"block{i}", block)
            in_ch = ch * block_cls.expansion

    def __call__(self, x: Array, *, train: bool) -> Array:
        for i in range(self.num_blocks):
            x = getattr(self, f"block{i}")(x, train=train)
        return x


class ResNet(nnx.Module):
    """ResNet encoder: images (B, H, W, C_in) -> pooled features (B, num_features), float32.

    Args:
      stage_sizes: blocks per stage, e.g. (3, 4, 6, 3).
      block_cls: `BasicBlock` or `Bottleneck`.
      width: channels of the first stage (64 = torchvision); stages use width * (1, 2, 4, 8).
      in_channels: image channels (3).
      dtype: compute dtype (float32 or bfloat16); parameters stay float32.
      bn_momentum: flax convention (running = m * running + (1 - m) * batch); 0.9 equals
        torch's momentum 0.1.
      zero_init_residual: zero the scale of each block's last BatchNorm (torchvision option).
      rngs: parameter initialisation.

    Call with `train=True` to normalise with batch statistics and update the running
    statistics (nnx.BatchStat), `train=False` to use the running statistics. With
    `return_stages=True` the call also returns the four stages' feature maps (strides 4, 8, 16,
    32; channels `stage_channels`), e.g. for a keypoint head.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int],
        block_cls: type,
        *,
        width: int = 64,
        in_channels: int = 3,
        dtype: Any = jnp.float32,
        bn_momentum: float = 0.9,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(stage_sizes) != 4:
            raise ValueError(f"ResNet: stage_sizes must have 4 entries, found {tuple(stage_sizes)}")
        if width < 1:
            raise ValueError(f"ResNet: width must be a positive int, found {width}")
        dtype = jnp.dtype(dtype)
        self.dtype = dtype
        self.conv1 = _conv(in_channels, width, 7, 2, dtype, rngs, cls=cpu_kernels.StemConv)
        self.bn1 = _bn(width, dtype, bn_momentum, rngs)
        in_ch = width
        stage_channels = []
        for s, n in enumerate(stage_sizes):
            ch = width * 2**s
            stage = Stage(
                block_cls,
                in_ch,
                ch,
                n,
                1 if s == 0 else 2,
                dtype=dtype,
                bn_momentum=bn_momentum,
                zero_init_residual=zero_init_residual,
                rngs=rngs,
            )
            setattr(self, f"layer{s + 1}", stage)
            in_ch = ch * block_cls.expansion
            stage_channels.append(in_ch)
        self.stage_channels = tuple(stage_channels)
        self.num_features = in_ch

    def __call__(
        self, x: Float[Array, "b h w c"], *, train: bool, return_stages: bool = False
    ) -> Float[Array, "b f"] | tuple[Float[Array, "b f"], tuple[Array, ...]]:
        x = x.astype(self.dtype)
        x = self.bn1(self.conv1(x), not train, relu=True)  # (B, H/2, W/2, width)
        x = cpu_kernels.max_pool_3x3_s2(x)  # (B, H/4, W/4, width)
        stages = []
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x, train=train)  # (B, H/2^(s+1), W/2^(s+1), stage_channels[s-1])
            stages.append(x)
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # (B, num_features)
        return (pooled, tuple(stages)) if return_stages else pooled


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
RESNETS = {18: ResNet18, 34: ResNet34, 50: ResNet50}


def resnet_from_config(
    depth: int,
    *,
    width: int = 64,
    dtype: Any = "float32",
    bn_momentum: float = 0.9,
    zero_init_residual: bool = False,
    rngs: nnx.Rngs,
) -> ResNet:
    """ResNet-`depth` (18, 34 or 50) with the given base width and compute dtype."""
    if depth not in RESNETS:
        raise ValueError(f"resnet_from_config: depth must be one of {sorted(RESNETS)}, found {depth!r}")
    return RESNETS[depth](
        width=width, dtype=dtype, bn_momentum=bn_momentum, zero_init_residual=zero_init_residual, rngs=rngs
    )


# --------------------------------------------------------------------------------------------
# Encoder weight files (.npz of flattened paths), written by tools/convert_resnet50_weights.py.


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def save_encoder_params(path: str, params: Mapping[str, Any], batch_stats: Mapping[str, Any]) -> None:
    """Write encoder params and batch stats (nested dicts) to `path` (.npz, keys 'params/...')."""
    flat = {**_flatten(params, "params"), **_flatten(batch_stats, "batch_stats")}
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_encoder_params(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an encoder .npz written by `save_encoder_params` -> (params, batch_stats) nested dicts.

    The dicts have the layout of `nnx.split(resnet, nnx.Param, nnx.BatchStat)` as pure dicts,
    i.e. of `params["encoder"]` / `batch_stats["encoder"]` from `hmr.init_generator`. Use
    `hmr.load_pretrained_encoder` to put them into a generator's state with shape checks.
    """
    trees: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            group, *parts = key.split("/")
            if group not in trees or not parts:
                raise ValueError(
                    f"load_encoder_params: {path}: unexpected key {key!r}; expected 'params/...' or 'batch_stats/...'"
                )
            node = trees[group]
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = np.asarray(data[key], dtype=np.float32)
    if not trees["params"]:
        raise ValueError(f"load_encoder_params: {path} holds no 'params/...' arrays")
    return trees["params"], trees["batch_stats"]


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

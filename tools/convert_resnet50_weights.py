"""Convert a torchvision- or timm-style ResNet checkpoint into hmr_jax encoder weights (.npz).

    python tools/convert_resnet50_weights.py resnet50-0676ba61.pth resnet50_encoder.npz

Then point the config's `model.pretrained_encoder` at the .npz; the trainer loads it with
`hmr_jax.models.hmr.load_pretrained_encoder(params, batch_stats, path)`.

Input: a local file, no downloads --
  .pth / .pt       a PyTorch state_dict (read with torch.load(weights_only=True)); a dict wrapping
                   it under 'state_dict' or 'model', and a 'module.' prefix (DDP), are accepted;
  .safetensors     read with the `safetensors` package (a dependency; no torch, no pickle).
torchvision's resnet18/34/50 and timm's resnet18/34/50 use the same parameter names (conv1, bn1,
layer1.0.conv1, ..., layerN.0.downsample.0 / .1, fc), so both convert. ResNet-50 weights must
be torchvision's v1.5 layout (stride on the 3x3 convolution; timm's and torchvision's are).

Mapping: conv weight OIHW -> kernel HWIO; BatchNorm weight/bias -> params scale/bias,
running_mean/running_var -> batch_stats mean/var; num_batches_tracked and the classifier `fc`
are dropped. Depth (block type and blocks per stage) and width (conv1's output channels) are
read from the checkpoint and the result is checked against `hmr_jax.models.resnet.ResNet`.

Note: torchvision/timm models expect RGB images normalised with the ImageNet mean/std, which is
what the hmr_jax input pipeline produces.
"""

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
_STEM_KEY = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BN_PARAMS = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .pth/.pt (torch) or .safetensors checkpoint into {name: float32 numpy array}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(
                f"{path}: reading .safetensors needs the `safetensors` package, which is "
                "not installed; install it or convert the file to .pth"
            ) from e
        raw: Mapping[str, Any] = load_file(str(path))
    elif suffix in (".pth", ".pt", ".bin"):
        import torch

        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(raw, Mapping) and wrapper in raw and isinstance(raw[wrapper], Mapping):
                raw = raw[wrapper]
    else:
        raise ValueError(f"{path}: expected a .pth, .pt, .bin or .safetensors file, found suffix {suffix!r}")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state_dict (name -> tensor), found {type(raw).__name__}")
    out = {}
    for name, value in raw.items():
        name = name.removeprefix("module.")
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[name] = arr
    return out


def _set(tree: dict[str, Any], path: tuple[str, ...], value: np.ndarray) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    if path[-1] in node:
        raise ValueError(f"duplicate entry for {'/'.join(path)}")
    node[path[-1]] = value


def _module_leaf(kind: str, torch_param: str, value: np.ndarray, name: str) -> tuple[str, str, np.ndarray] | None:
    """(group, flax leaf name, converted array) for one torch parameter, None if dropped."""
    if torch_param == "num_batches_tracked":
        return None
    if kind == "conv":
        if torch_param != "weight" or value.ndim != 4:
            raise ValueError(
                f"{name}: expected a 4-D conv weight (bias-free convolutions), found "
                f"{torch_param} with shape {value.shape}"
            )
        return "params", "kernel", np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if torch_param not in _BN_PARAMS:
        raise ValueError(f"{name}: unexpected BatchNorm entry {torch_param!r}")
    group, leaf = _BN_PARAMS[torch_param]
    return group, leaf, value


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """torchvision/timm ResNet state_dict -> (params, batch_stats) nested dicts of float32 arrays
    in the layout of `hmr_jax.models.resnet.ResNet` (see its module docstring)."""
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    groups = {"params": params, "batch_stats": stats}
    unknown = []
    for name, value in state_dict.items():
        value = np.asarray(value, np.float32)
        if name.startswith("fc."):
            continue  # ImageNet classifier: not part of the encoder
        if m := _STEM_KEY.match(name):
            module, tparam = m.groups()
            path: tuple[str, ...] = (module,)
            kind = "conv" if module.startswith("conv") else "bn"
        elif m := _BLOCK_KEY.match(name):
            stage, block, module, tparam = m.groups()
            flax_module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(module, module)
            path = (f"layer{stage}", f"block{block}", flax_module)
            kind = "conv" if flax_module.endswith("conv") or flax_module.startswith("conv") else "bn"
        else:
            unknown.append(name)
            continue
        leaf = _module_leaf(kind, tparam, value, name)
        if leaf is not None:
            group, leaf_name, arr = leaf
            _set(groups[group], path + (leaf_name,), arr)
    if unknown:
        raise ValueError(
            f"state_dict has {len(unknown)} entries that are not torchvision/timm ResNet parameters, e.g. {unknown[:5]}"
        )
    if "conv1" not in params:
        raise ValueError("state_dict has no stem convolution 'conv1.weight': not a ResNet checkpoint")
    return params, stats


def infer_architecture(params: Mapping[str, Any]) -> tuple[int, int]:
    """(depth, width) of converted params: block type and blocks per stage, conv1's channels."""
    width = int(params["conv1"]["kernel"].shape[-1])
    sizes = tuple(len(params.get(f"layer{s}", {})) for s in range(1, 5))
    bottleneck = "conv3" in params.get("layer1", {}).get("block0", {})
    table = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50}
    if (sizes, bottleneck) not in table:
        raise ValueError(
            f"unsupported ResNet: blocks per stage {sizes}, "
            f"{'bottleneck' if bottleneck else 'basic'} blocks; expected ResNet-18/34/50"
        )
    return table[(sizes, bottleneck)], width


def check_against_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> tuple[int, int]:
    """Compare converted arrays with an abstract `ResNet` of the inferred depth/width; raise on mismatch."""
    from flax import nnx

    from hmr_jax.models import resnet

    depth, width = infer_architecture(params)
    model = nnx.eval_shape(lambda: resnet.resnet_from_config(depth, width=width, rngs=nnx.Rngs(0)))
    ref_params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    ref_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    for group, ref, got in (("params", ref_params, params), ("batch_stats", ref_stats, stats)):
        ref_flat = dict(_flat(ref))
        got_flat = dict(_flat(got))
        if set(ref_flat) != set(got_flat):
            raise ValueError(
                f"{group}: layout differs from ResNet-{depth} (width {width}); missing "
                f"{sorted(set(ref_flat) - set(got_flat))[:5]}, unexpected "
                f"{sorted(set(got_flat) - set(ref_flat))[:5]}"
            )
        for k, v in ref_flat.items():
            if tuple(v.shape) != got_flat[k].shape:
                raise ValueError(f"{group}/{k}: expected shape {tuple(v.shape)}, found {got_flat[k].shape}")
    return depth, width


def _flat(tree: Mapping[str, Any], prefix: str = ""):
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from _flat(v, key)
        else:
            yield key, v


def convert_file(src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Convert checkpoint `src` to encoder weights `dst` (.npz); returns (depth, width)."""
    from hmr_jax.models import resnet

    params, stats = convert_state_dict(load_state_dict(src))
    depth, width = check_against_model(params, stats)
    resnet.save_encoder_params(str(dst), params, stats)
    return depth, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torchvision/timm ResNet checkpoint (.pth, .pt or .safetensors)")
    parser.add_argument("dst", help="output .npz for the config's model.pretrained_encoder")
    args = parser.parse_args(argv)
    depth, width = convert_file(args.src, args.dst)
    print(f"wrote ResNet-{depth} (width {width}) encoder weights to {args.dst}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    main()

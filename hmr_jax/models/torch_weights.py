"""PyTorch weights -> hmr_jax parameters: torchvision/timm ResNets and SPIN-style HMR generators.

Reading is safe: a `.pt` / `.pth` / `.tar` / `.bin` file is a pickle, read with
`torch.load(map_location='cpu', weights_only=True)` (an allowlisting unpickler: no code from the
file runs; a file naming any other global is refused, naming it); a `.safetensors` file is read
with the `safetensors` package (no pickle at all). torch is an optional extra, imported here only
when a torch file is read.

ResNet names (torchvision, timm, SPIN, mmcv) -> `hmr_jax.models.resnet.ResNet` paths:

    conv1.weight (OIHW)                 conv1/kernel (HWIO)
    bn1.{weight,bias}                   bn1/{scale,bias}                (params)
    bn1.{running_mean,running_var}      bn1/{mean,var}                  (batch_stats)
    layer2.0.conv1.weight               layer2/block0/conv1/kernel
    layer2.0.downsample.{0,1}.*         layer2/block0/downsample_{conv,bn}/*
    *.num_batches_tracked               (dropped)

BatchNorm conventions agree: torch's eps 1e-5 is the encoder's, and torch's momentum 0.1 is flax's
0.9 (`model.bn_momentum`).

SPIN's regressor head (SPIN `models/hmr.py`; mmhuman3d's `HMRHead` under `head.`):
fc1 (1024 x [2048 features, 144 pose, 10 shape, 3 cam]), fc2 (1024 x 1024), decpose (144),
decshape (10), deccam (3), buffers init_pose (1, 144), init_shape (1, 10), init_cam (1, 3).
Here: regressor/fc1, fc2 (Linear kernels are the transposed weights; the input order
[features, pose, betas, cam] is the same), regressor/out = [decpose | decshape | deccam] along the
output axis, and the mean parameters from the buffers. SPIN reads each joint's six numbers as
`x.view(-1, 3, 2)` (first column (x0, x2, x4), second (x1, x3, x5)); the regressor's 6d layout is
the two columns concatenated (`geometry.rot6d_to_matrix`): per joint, ours[k] = SPIN's[SPIN6D_ORDER[k]]
in decpose's output rows, fc1's pose input columns and init_pose.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin")
SPIN6D_ORDER = (0, 2, 4, 1, 3, 5)  # our 6d index k holds SPIN's index SPIN6D_ORDER[k]
HEAD_KEYS = {  # SPIN head key -> expected shape (for the default 2048 features, 144 pose numbers)
    "fc1.weight": (1024, 2048 + 144 + 13),
    "fc1.bias": (1024,),
    "fc2.weight": (1024, 1024),
    "fc2.bias": (1024,),
    "decpose.weight": (144, 1024),
    "decpose.bias": (144,),
    "decshape.weight": (10, 1024),
    "decshape.bias": (10,),
    "deccam.weight": (3, 1024),
    "deccam.bias": (3,),
    "init_pose": (1, 144),
    "init_shape": (1, 10),
    "init_cam": (1, 3),
}
_BN_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


class WeightsError(ValueError):
    """A checkpoint that does not fit: names the file, the key, what was expected and found."""


# --------------------------------------------------------------------------------------------
# Reading files.


def read_checkpoint(path: str | Path) -> Any:
    """The object a torch file holds (read with weights_only=True), or a .safetensors file's
    {name: array}. Arrays come back as numpy float32/int arrays wherever tensors were."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(f"{path}: reading .safetensors needs the `safetensors` package, not installed") from e
        return dict(load_file(str(path)))
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"{path}: expected a PyTorch file ({', '.join(TORCH_SUFFIXES)}) or .safetensors, found suffix {suffix!r}"
        )
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path}: reading a PyTorch checkpoint needs torch (an optional extra: `pip install torch`, "
            "the CPU build is enough), which is not installed; or convert the file to .safetensors"
        ) from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises UnpicklingError / RuntimeError with the reason)
        reason = str(e)
        # torch's long advice around the one line that matters (which global or opcode was refused)
        if "WeightsUnpickler error:" in reason:
            reason = reason.split("WeightsUnpickler error:", 1)[1]
        elif "trusted source." in reason:
            reason = reason.split("trusted source.", 1)[1]
        reason = reason.split("Check the documentation", 1)[0]
        reason = " ".join(reason.split())
        raise WeightsError(
            f"{path}: refused or unreadable as a weights-only PyTorch checkpoint (no code from the file "
            f"is run): {type(e).__name__}: {reason}"
        ) from None
    return _to_numpy(obj)


def _to_numpy(obj: Any) -> Any:
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):
        return obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ResNet checkpoint's state dict {name: array}: a bare state dict, or one wrapped under
    'state_dict' or 'model'; a DDP 'module.' prefix is removed."""
    raw = read_checkpoint(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(raw, Mapping) and wrapper in raw and isinstance(raw[wrapper], Mapping):
            raw = raw[wrapper]
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path}: expected a state_dict (name -> tensor), found {type(raw).__name__}")
    return {name.removeprefix("module."): np.asarray(v) for name, v in raw.items()}


# --------------------------------------------------------------------------------------------
# ResNet encoders.


def torch_name(path: tuple[str, ...]) -> str:
    """An encoder leaf path, e.g. ('layer2', 'block0', 'downsample_bn', 'mean') -> its torch name
    ('layer2.0.downsample.1.running_mean')."""
    *modules, leaf = path
    parts = []
    for m in modules:
        if m.startswith("block"):
            parts.append(m.removeprefix("block"))
        else:
            parts.append({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(m, m))
    is_conv = modules[-1].startswith("conv") or modules[-1] == "downsample_conv"
    parts.append("weight" if is_conv else _BN_LEAVES[leaf])
    return ".".join(parts)


def _convert_leaf(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel":
        if value.ndim != 4:
            raise WeightsError(f"{torch_name(path)}: expected a 4-D conv weight, found shape {value.shape}")
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    return value


def _flat(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flat(v, prefix + (str(k),))
        else:
            yield prefix + (str(k),), v


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return out


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """torchvision/timm ResNet state_dict -> (params, batch_stats) nested dicts of float32 arrays in
    the layout of `ResNet` (depth and width read from the names; the classifier `fc` is dropped)."""
    import re

    block = re.compile(r"^layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
    stem = re.compile(r"^(conv1|bn1)\.(\w+)$")
    bn_leaf = {v: k for k, v in _BN_LEAVES.items()}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    unknown = []
    for name, value in state_dict.items():
        if name.startswith("fc.") or name.endswith(".num_batches_tracked"):
            continue
        if m := stem.match(name):
            modules, tparam = [m.group(1)], m.group(2)
        elif m := block.match(name):
            stage, blk, module, tparam = m.groups()
            module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(module, module)
            modules = [f"layer{stage}", f"block{blk}", module]
        else:
            unknown.append(name)
            continue
        is_conv = modules[-1].startswith("conv") or modules[-1] == "downsample_conv"
        if is_conv and tparam != "weight":
            raise WeightsError(f"{name}: expected a bias-free convolution (only 'weight'), found {tparam!r}")
        if not is_conv and tparam not in bn_leaf:
            raise WeightsError(f"{name}: unexpected BatchNorm entry {tparam!r}")
        path = (*modules, "kernel" if is_conv else bn_leaf[tparam])
        flat[path] = _convert_leaf(path, np.asarray(value, np.float32))
    if unknown:
        raise WeightsError(
            f"state_dict has {len(unknown)} entries that are not torchvision/timm ResNet parameters, e.g. {unknown[:5]}"
        )
    if ("conv1", "kernel") not in flat:
        raise WeightsError("state_dict has no stem convolution 'conv1.weight': not a ResNet checkpoint")
    params = _unflat({p: v for p, v in flat.items() if p[-1] not in ("mean", "var")})
    stats = _unflat({p: v for p, v in flat.items() if p[-1] in ("mean", "var")})
    return params, stats


def infer_architecture(params: Mapping[str, Any]) -> tuple[int, int]:
    """(depth, width) of converted params: block type and blocks per stage, conv1's channels."""
    width = int(params["conv1"]["kernel"].shape[-1])
    sizes = tuple(len(params.get(f"layer{s}", {})) for s in range(1, 5))
    bottleneck = "conv3" in params.get("layer1", {}).get("block0", {})
    table = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50}
    if (sizes, bottleneck) not in table:
        raise WeightsError(
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
        ref_flat, got_flat = dict(_flat(ref)), dict(_flat(got))
        if set(ref_flat) != set(got_flat):
            missing = sorted(torch_name(p) for p in set(ref_flat) - set(got_flat))
            extra = sorted(torch_name(p) for p in set(got_flat) - set(ref_flat))
            raise WeightsError(
                f"{group}: layout differs from ResNet-{depth} (width {width}); missing {missing[:5]}, unexpected {extra[:5]}"
            )
        for k, v in ref_flat.items():
            if tuple(v.shape) != got_flat[k].shape:
                raise WeightsError(f"{torch_name(k)}: expected shape {tuple(v.shape)}, found {got_flat[k].shape}")
    return depth, width


def convert_file(src: str | Path, dst: str | Path) -> tuple[int, int]:
    """Convert ResNet checkpoint `src` to encoder weights `dst` (.npz); returns (depth, width)."""
    from hmr_jax.models import resnet

    params, stats = convert_state_dict(load_state_dict(src))
    depth, width = check_against_model(params, stats)
    resnet.save_encoder_params(str(dst), params, stats)
    return depth, width


# --------------------------------------------------------------------------------------------
# SPIN / mmhuman3d HMR generators.


def hmr_state_dict(raw: Any, fmt: str, where: str) -> dict[str, np.ndarray]:
    """The generator's state dict in SPIN's names from a file's object: 'spin' -> raw['model'] (or
    a bare state dict, e.g. from .safetensors); 'mmhuman3d' -> raw['state_dict'] (or bare) with the
    `backbone.` / `head.` prefixes removed (any other key is an error naming it)."""
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{where}: expected a dict, found {type(raw).__name__}")
    wrapper = {"spin": "model", "mmhuman3d": "state_dict"}.get(fmt)
    if wrapper is None:
        raise ValueError(f"format must be 'spin' or 'mmhuman3d', found {fmt!r}")
    if wrapper in raw:
        sd = raw[wrapper]
        if not isinstance(sd, Mapping):
            raise WeightsError(f"{where}: entry {wrapper!r} should be a state dict, found {type(sd).__name__}")
    elif all(isinstance(v, np.ndarray) for v in raw.values()):
        sd = raw
    else:
        raise WeightsError(
            f"{where}: a {fmt} checkpoint holds its weights under {wrapper!r}, found entries {sorted(raw)[:8]}"
        )
    out = {}
    for name, value in sd.items():
        if fmt == "mmhuman3d":
            if name.startswith("backbone."):
                name = name.removeprefix("backbone.")
            elif name.startswith("head."):
                name = name.removeprefix("head.")
            else:
                raise WeightsError(f"{where}: unknown key {name!r}: mmhuman3d keys start with 'backbone.' or 'head.'")
        else:
            name = name.removeprefix("module.")
        if name in out:
            raise WeightsError(f"{where}: key {name!r} appears twice")
        out[name] = np.asarray(value)
    return out


def _pose_perm(n_pose: int) -> np.ndarray:
    """Index array: our 6d pose entry i is SPIN's entry perm[i]."""
    joints = n_pose // 6
    return np.array([6 * j + k for j in range(joints) for k in SPIN6D_ORDER])


def hmr_params_from_spin(
    state_dict: Mapping[str, np.ndarray],
    ref_params: Mapping[str, Any],
    ref_stats: Mapping[str, Any],
    where: str = "checkpoint",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """SPIN-named state dict -> (params, batch_stats, means) for a generator whose (abstract)
    params / batch_stats are `ref_params` / `ref_stats` (a ResNet encoder and a 6d regressor with
    fc1, fc2, out; no keypoint head). `means`: {'pose' (144,) in our 6d layout, 'betas' (10,),
    'cam' (3,)}. Every key is used exactly once with its exact shape; a missing or unknown key
    (num_batches_tracked aside) raises WeightsError naming it."""
    if set(ref_params) != {"encoder", "regressor"}:
        raise WeightsError(f"the generator must have an encoder and a regressor only, found {sorted(ref_params)}")
    reg = ref_params["regressor"]
    if set(reg) != {"fc1", "fc2", "out"}:
        raise WeightsError(f"the regressor must have two hidden layers (fc1, fc2), found {sorted(reg)}")
    n_feat_in, hidden = reg["fc1"]["kernel"].shape
    n_out = reg["out"]["kernel"].shape[1]
    n_pose = n_out - 13
    if n_pose != 144:
        raise WeightsError(f"the regressor must predict 6d rotations (144 pose numbers), found {n_pose}")
    n_feat = n_feat_in - n_out
    # Expected SPIN keys and shapes.
    expected: dict[str, tuple[int, ...]] = {}
    enc_leaves = {("params",) + p: v for p, v in _flat(ref_params["encoder"])}
    enc_leaves.update({("batch_stats",) + p: v for p, v in _flat(ref_stats.get("encoder", {}))})
    names = {}
    for gp, v in enc_leaves.items():
        name = torch_name(gp[1:])
        names[name] = gp
        shape = tuple(v.shape)
        expected[name] = (shape[3], shape[2], shape[0], shape[1]) if gp[-1] == "kernel" else shape
    head = dict(HEAD_KEYS)
    head.update(
        {
            "fc1.weight": (hidden, n_feat_in),
            "fc1.bias": (hidden,),
            "fc2.weight": tuple(reg["fc2"]["kernel"].shape[::-1]),
            "fc2.bias": (reg["fc2"]["kernel"].shape[1],),
            "decpose.weight": (n_pose, reg["out"]["kernel"].shape[0]),
            "decshape.weight": (10, reg["out"]["kernel"].shape[0]),
            "deccam.weight": (3, reg["out"]["kernel"].shape[0]),
        }
    )
    expected.update(head)
    unknown = sorted(k for k in state_dict if k not in expected and not k.endswith(".num_batches_tracked"))
    missing = sorted(k for k in expected if k not in state_dict)
    if unknown:
        raise WeightsError(f"{where}: unknown key(s) {unknown[:5]} (of {len(unknown)}): not part of SPIN's HMR")
    if missing:
        raise WeightsError(f"{where}: missing key(s) {missing[:5]} (of {len(missing)}) of SPIN's HMR")
    for k, shape in expected.items():
        if tuple(state_dict[k].shape) != shape:
            raise WeightsError(f"{where}: {k}: expected shape {shape}, found {tuple(state_dict[k].shape)}")
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items() if k in expected}

    params: dict[tuple[str, ...], np.ndarray] = {}
    stats: dict[tuple[str, ...], np.ndarray] = {}
    for name, gp in names.items():
        (params if gp[0] == "params" else stats)[("encoder",) + gp[1:]] = _convert_leaf(gp[1:], sd[name])
    perm = _pose_perm(n_pose)
    # fc1's input columns: [features, pose (SPIN layout), shape, cam] -> pose columns permuted.
    cols = np.concatenate([np.arange(n_feat), n_feat + perm, np.arange(n_feat + n_pose, n_feat_in)])
    params[("regressor", "fc1", "kernel")] = sd["fc1.weight"][:, cols].T
    params[("regressor", "fc1", "bias")] = sd["fc1.bias"]
    params[("regressor", "fc2", "kernel")] = sd["fc2.weight"].T
    params[("regressor", "fc2", "bias")] = sd["fc2.bias"]
    out_w = np.concatenate([sd["decpose.weight"][perm], sd["decshape.weight"], sd["deccam.weight"]], axis=0)
    out_b = np.concatenate([sd["decpose.bias"][perm], sd["decshape.bias"], sd["deccam.bias"]])
    params[("regressor", "out", "kernel")] = out_w.T
    params[("regressor", "out", "bias")] = out_b
    means = {
        "pose": sd["init_pose"].reshape(-1)[perm],
        "betas": sd["init_shape"].reshape(-1),
        "cam": sd["init_cam"].reshape(-1),
    }
    for group, got, ref in (("params", params, ref_params), ("batch_stats", stats, ref_stats)):
        ref_flat = dict(_flat(ref))
        assert set(got) == set(ref_flat), (group, sorted(set(got) ^ set(ref_flat))[:5])
        for p, v in ref_flat.items():
            assert got[p].shape == tuple(v.shape), (group, p, got[p].shape, v.shape)
    return _unflat(params), _unflat(stats), means

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

The mapping lives in `hmr_jax.models.torch_weights` (shared with `hmr_jax.import_checkpoint`).
Mapping: conv weight OIHW -> kernel HWIO; BatchNorm weight/bias -> params scale/bias,
running_mean/running_var -> batch_stats mean/var; num_batches_tracked and the classifier `fc`
are dropped. Depth (block type and blocks per stage) and width (conv1's output channels) are
read from the checkpoint and the result is checked against `hmr_jax.models.resnet.ResNet`.

Note: torchvision/timm models expect RGB images normalised with the ImageNet mean/std, which is
what the hmr_jax input pipeline produces.
"""

import argparse
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hmr_jax.models.torch_weights import (  # noqa: E402
    check_against_model,
    convert_file,
    convert_state_dict,
    infer_architecture,
    load_state_dict,
)

__all__ = ["check_against_model", "convert_file", "convert_state_dict", "infer_architecture", "load_state_dict"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torchvision/timm ResNet checkpoint (.pth, .pt or .safetensors)")
    parser.add_argument("dst", help="output .npz for the config's model.pretrained_encoder")
    args = parser.parse_args(argv)
    depth, width = convert_file(args.src, args.dst)
    print(f"wrote ResNet-{depth} (width {width}) encoder weights to {args.dst}")


if __name__ == "__main__":
    main()

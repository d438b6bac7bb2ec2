"""tools/convert_resnet50_weights.py against a PyTorch ResNet with torchvision's exact names.

torchvision is not installed here, so the reference network is rebuilt with plain torch.nn using
torchvision's module/parameter names (conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.0/1,
fc); timm's resnet50 uses the same names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hmr_jax.models import hmr, resnet

torch = pytest.importorskip("torch")
tnn = torch.nn


@pytest.fixture
def tool(load_tool):
    """tools/convert_resnet50_weights.py, loaded afresh for each test."""
    return load_tool("convert_resnet50_weights")


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class TorchResNet(tnn.Module):
    """torchvision.models.ResNet, names included (layers, width knob for test speed)."""

    def __init__(self, block, layers, width=64, num_classes=1000):
        super().__init__()
        self.inplanes = width
        self.conv1 = tnn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=gen)
            m.bias.data = 0.1 * torch.randn(n, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
            m.running_var.data = 0.5 + torch.rand(n, generator=gen)


def _convert_and_compare(tool, tmp_path, block, layers, width, depth):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TorchResNet(block, layers, width=width)
    _randomise_bn(model, gen)
    model.eval()
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "resnet.pth"
    torch.save(model.state_dict(), src)
    dst = tmp_path / "encoder.npz"

    assert tool.convert_file(src, dst) == (depth, width)

    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        ref = model.features(x).numpy()

    params, stats = resnet.load_encoder_params(str(dst))
    abstract = nnx.eval_shape(lambda: resnet.resnet_from_config(depth, width=width, rngs=nnx.Rngs(0)))
    graphdef = nnx.graphdef(abstract)

    @jax.jit
    def features(p, s, images):
        return nnx.merge(graphdef, p, s)(images, train=False)

    got = np.asarray(features(params, stats, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))))
    assert got.shape == ref.shape == (2, width * 8 * block.expansion)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    return dst


def test_resnet50_conversion_matches_torch(tmp_path, tool):
    dst = _convert_and_compare(tool, tmp_path, TorchBottleneck, (3, 4, 6, 3), width=64, depth=50)
    # The converted file also loads into a full generator's state.
    graphdef, params, stats = jax.eval_shape(lambda k: hmr.init_generator(k, depth=50, width=64), jax.random.key(0))
    new_params, new_stats = hmr.load_pretrained_encoder(params, stats, str(dst))
    assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(params)
    assert jax.tree_util.tree_structure(new_stats) == jax.tree_util.tree_structure(stats)


def test_safetensors_gives_the_same_encoder_as_pth(tmp_path, tool):
    from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

    pth = _convert_and_compare(tool, tmp_path / "pth", TorchBasicBlock, (2, 2, 2, 2), width=8, depth=18)
    state = torch.load(tmp_path / "pth" / "resnet.pth", weights_only=True)
    save_file(state, tmp_path / "resnet.safetensors")
    assert tool.convert_file(tmp_path / "resnet.safetensors", tmp_path / "st.npz") == (18, 8)
    with np.load(pth) as a, np.load(tmp_path / "st.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_resnet18_conversion_matches_torch(tmp_path, tool):
    _convert_and_compare(tool, tmp_path, TorchBasicBlock, (2, 2, 2, 2), width=16, depth=18)


def test_load_pretrained_encoder_rejects_wrong_architecture(tmp_path, tool):
    torch.manual_seed(0)
    model = TorchResNet(TorchBasicBlock, (2, 2, 2, 2), width=8)
    src, dst = tmp_path / "r18.pth", tmp_path / "r18.npz"
    torch.save(model.state_dict(), src)
    tool.convert_file(src, dst)
    _, params, stats = jax.eval_shape(lambda k: hmr.init_generator(k, depth=34, width=8), jax.random.key(0))
    with pytest.raises(ValueError, match="layout mismatch"):
        hmr.load_pretrained_encoder(params, stats, str(dst))


def test_convert_rejects_non_resnet_keys(tool):
    with pytest.raises(ValueError, match="not torchvision/timm ResNet"):
        tool.convert_state_dict({"conv1.weight": np.zeros((8, 3, 7, 7)), "head.weight": np.zeros((2, 2))})

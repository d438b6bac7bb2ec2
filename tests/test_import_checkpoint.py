"""hmr_jax.import_checkpoint against a PyTorch module with SPIN's exact key names and forward.

The module is written here from the documented facts of SPIN's `models/hmr.py` (torchvision-style
ResNet-50 without `fc`; fc1 -> dropout -> fc2 -> dropout with no activation between; decpose /
decshape / deccam residual updates from the buffers init_pose / init_shape / init_cam; 3
iterations; 6d read as `x.view(-1, 3, 2)` then Gram-Schmidt), randomised, and saved in SPIN's and
mmhuman3d's file structures.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax import import_checkpoint as imp
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.models import hmr as hmr_lib
from hmr_jax.models import torch_weights

torch = pytest.importorskip("torch")
nn = torch.nn


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def rot6d_to_rotmat_spin(x):
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = torch.nn.functional.normalize(a1, dim=1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=1)
    return torch.stack((b1, b2, torch.cross(b1, b2, dim=1)), dim=-1)


class SpinHMR(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(inplanes, planes, (1 if i == 0 else 2) if b == 0 else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.fc1 = nn.Linear(2048 + 144 + 13, 1024)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(1024, 144)
        self.decshape = nn.Linear(1024, 10)
        self.deccam = nn.Linear(1024, 3)
        self.register_buffer("init_pose", torch.zeros(1, 144))
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.zeros(1, 3))

    def forward(self, x, n_iter=3):
        b = x.shape[0]
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        xf = x.mean(dim=(2, 3))
        pose, shape, cam = self.init_pose.expand(b, -1), self.init_shape.expand(b, -1), self.init_cam.expand(b, -1)
        out = []
        for _ in range(n_iter):
            xc = torch.cat([xf, pose, shape, cam], 1)
            xc = self.drop2(self.fc2(self.drop1(self.fc1(xc))))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
            out.append((rot6d_to_rotmat_spin(pose).reshape(b, 24, 3, 3), shape, cam))
        return out


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                scale = 0.3 if name == "decpose" else 0.05  # decpose large: every iteration moves the pose
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * scale / m.in_features**0.5 * 4)
                m.bias.copy_(0.05 * torch.randn(m.out_features, generator=g))
        model.init_pose.copy_(torch.randn(1, 144, generator=g))
        model.init_shape.copy_(torch.randn(1, 10, generator=g))
        model.init_cam.copy_(torch.tensor([[0.9, 0.05, -0.1]]) + 0.1 * torch.randn(1, 3, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def spin(tmp_path_factory):
    """(module, its SPIN-format .pt, mmhuman3d-format .pth, pixels (2, 3, 224, 224), torch outputs)."""
    torch.manual_seed(0)
    model = _randomise(SpinHMR())
    root = tmp_path_factory.mktemp("spin")
    sd = model.state_dict()
    spin_path = root / "model_checkpoint.pt"
    torch.save(
        {
            "model": sd,
            "optimizer": {"state": {}, "param_groups": []},
            "epoch": 3,
            "batch_idx": 10,
            "batch_size": 64,
            "dataset_perm": torch.arange(5),
            "total_step_count": 1000,
        },
        spin_path,
    )
    head = ("fc1.", "fc2.", "decpose.", "decshape.", "deccam.", "init_")
    mm = {(f"head.{k}" if k.startswith(head) else f"backbone.{k}"): v for k, v in sd.items()}
    mm_path = root / "hmr_mmhuman3d.pth"
    torch.save({"state_dict": mm, "meta": {"epoch": 3, "mmcv_version": "1.3"}}, mm_path)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = model(pixels)
    return model, spin_path, mm_path, pixels, outs


def _reference(config):
    kw = state_lib.generator_kwargs(config)
    _, p, s = jax.eval_shape(lambda k: hmr_lib.init_generator(k, **kw), jax.random.PRNGKey(0))
    return p, s


def test_spin_checkpoint_imports_exactly(spin, tmp_path):
    model, spin_path, _, pixels, outs = spin
    out = tmp_path / "workdir"
    imp.main(["--format=spin", f"--checkpoint={spin_path}", f"--out={out}"])
    config = workdir_lib.load_run_config(str(out))
    assert (config.model.rot_repr, config.model.n_iter, config.model.hidden_activation) == ("6d", 3, "none")
    assert config.data.img_size == 224 and config.images.focal_length_224 == 5000.0
    parts = state_lib.make_static_parts(config)
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    state, _, step, _ = workdir_lib.restore_checkpoint(str(out), config, parts, mesh)
    assert step == 0
    images = jnp.asarray(pixels.numpy().transpose(0, 2, 3, 1))  # NCHW -> NHWC
    got, _ = jax.jit(lambda p, s, x: hmr_lib.apply_generator(parts.gen, p, s, x, None, train=False))(
        state.gen_params, state.gen_batch_stats, images
    )
    its = got["iterations"]
    for i, (rotmat, shape, cam) in enumerate(outs):
        np.testing.assert_allclose(its["pose_rotmat"][i], rotmat.numpy(), atol=1e-4, err_msg=f"iteration {i}")
        np.testing.assert_allclose(its["betas"][i], shape.numpy(), atol=1e-4, err_msg=f"iteration {i}")
        np.testing.assert_allclose(its["cam"][i], cam.numpy(), atol=1e-4, err_msg=f"iteration {i}")
    # Every iteration matters: the pose moves by more than the tolerance at each.
    rots = [o[0].numpy() for o in outs]
    assert min(np.abs(rots[1] - rots[0]).max(), np.abs(rots[2] - rots[1]).max()) > 1e-2


def test_mmhuman3d_checkpoint_maps_like_spin(spin):
    model, spin_path, mm_path, _, _ = spin
    config = imp.imported_config()
    a = imp.load_generator(str(spin_path), "spin", config)
    b = imp.load_generator(str(mm_path), "mmhuman3d", config)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # Every key of the file is used, with its shape: every value appears (permuted) in the result.
    sd = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    total = sum(v.size for v in sd.values())
    assert total == sum(np.size(x) for x in jax.tree.leaves(a))
    ref_p, ref_s = _reference(config)
    jax.tree.map(lambda r, x: np.testing.assert_equal(tuple(r.shape), np.shape(x)), (ref_p, ref_s), a[:2])
    # init_pose in our 6d layout: SPIN's (x0, x2, x4 | x1, x3, x5) per joint.
    spin_pose = sd["init_pose"].reshape(24, 6)
    np.testing.assert_array_equal(a[2]["pose"].reshape(24, 6), spin_pose[:, [0, 2, 4, 1, 3, 5]])


def test_missing_and_unknown_keys_are_named(spin):
    model, *_ = spin
    config = imp.imported_config()
    ref_p, ref_s = _reference(config)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    missing = dict(sd)
    del missing["layer3.2.bn2.running_var"]
    with pytest.raises(torch_weights.WeightsError, match=r"missing.*layer3\.2\.bn2\.running_var"):
        torch_weights.hmr_params_from_spin(missing, ref_p, ref_s)
    extra = dict(sd, **{"fc3.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(torch_weights.WeightsError, match=r"unknown.*fc3\.weight"):
        torch_weights.hmr_params_from_spin(extra, ref_p, ref_s)
    wrong = dict(sd, **{"decshape.weight": np.zeros((11, 1024), np.float32)})
    with pytest.raises(torch_weights.WeightsError, match=r"decshape\.weight: expected shape \(10, 1024\)"):
        torch_weights.hmr_params_from_spin(wrong, ref_p, ref_s)
    with pytest.raises(torch_weights.WeightsError, match=r"unknown key 'decpose\.weight'"):
        torch_weights.hmr_state_dict({"state_dict": {"decpose.weight": sd["decpose.weight"]}}, "mmhuman3d", "f")


def test_safetensors_reads_like_the_torch_file(spin, tmp_path):
    from safetensors.torch import save_file

    model, spin_path, *_ = spin
    st = tmp_path / "spin.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    config = imp.imported_config()
    jax.tree.map(
        np.testing.assert_array_equal,
        imp.load_generator(str(spin_path), "spin", config),
        imp.load_generator(str(st), "spin", config),
    )


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_checkpoint.pt"
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": _Evil(marker)}, f, protocol=2)
    else:
        torch.save({"model": _Evil(marker)}, path)
    with pytest.raises(torch_weights.WeightsError, match=r"refused.*system"):
        imp.load_generator(str(path), "spin", imp.imported_config())
    with pytest.raises(SystemExit, match="refused"):
        imp.main(["--format=spin", f"--checkpoint={path}", f"--out={tmp_path / 'out'}"])
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_config_checks_hidden_activation_and_6d_mean_pose():
    from hmr_jax import config_checks

    config = imp.imported_config()
    config.model.mean_pose = tuple(float(v) for v in np.tile([1.0, 0, 0, -1, 0, 0], 24))
    config.model.mean_betas = (0.0,) * 10
    config_checks.validate_config(config, stage="predict")
    config.model.hidden_activation = "tanh"
    with pytest.raises(config_checks.ConfigError, match="model.hidden_activation"):
        config_checks.validate_config(config, stage="predict")
    config.model.hidden_activation = "none"
    config.model.rot_repr = "aa"  # 144 numbers are 6d: only with rot_repr '6d'
    with pytest.raises(config_checks.ConfigError, match="model.mean_pose"):
        config_checks.validate_config(config, stage="predict")


@pytest.mark.slow
def test_predict_on_the_imported_workdir_reproduces_the_module(spin, tmp_path):
    """CLI end to end: import, then `hmr_jax.predict` on a 224 x 224 image (the whole-image box is
    an identity warp) gives the module's last iteration on the same normalised pixels."""
    import json
    import subprocess
    import sys

    from PIL import Image

    model, spin_path, *_ = spin
    rgb = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "person.png")
    wd, out = tmp_path / "wd", tmp_path / "pred"
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], check=True, capture_output=True)  # noqa: E731
    run("hmr_jax.import_checkpoint", "--format=spin", f"--checkpoint={spin_path}", f"--out={wd}")
    run("hmr_jax.predict", f"--workdir={wd}", f"--images={tmp_path / 'person.png'}", f"--out={out}")
    person = json.loads((out / "person.json").read_text())["people"][0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)[None]
    with torch.no_grad():
        rotmat, shape, cam = model(torch.tensor(x, dtype=torch.float32))[-1]
    np.testing.assert_allclose(np.asarray(person["pose_rotmat"]), rotmat.numpy()[0], atol=1e-4)
    np.testing.assert_allclose(person["betas"], shape.numpy()[0], atol=1e-4)
    np.testing.assert_allclose(person["cam"], cam.numpy()[0], atol=1e-4)


def test_legacy_torch_format_reads_like_the_zip_format(spin, tmp_path):
    """SPIN's 2019 release predates torch 1.6's zip files: the legacy stream reads the same."""
    model, spin_path, *_ = spin
    legacy = tmp_path / "model_checkpoint_legacy.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
    config = imp.imported_config()
    jax.tree.map(
        np.testing.assert_array_equal,
        imp.load_generator(str(spin_path), "spin", config),
        imp.load_generator(str(legacy), "spin", config),
    )

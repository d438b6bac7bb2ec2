"""The HMR model in plain PyTorch, for the side-by-side benchmarks (train_step.py, inference.py).

torchvision is not installable here, so the ResNet (v1.5, NCHW, torchvision's layout), HMR's
iterative regressor, the 25 discriminators, Rodrigues and SMPL (through `smplx.lbs.lbs`) are
written here with torch.nn, the same architecture as hmr_jax's (models/resnet.py, regressor.py,
discriminator.py).
"""

import numpy as np
import smplx.lbs
import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, ch, stride):
        super().__init__()
        out = ch * 4
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch, ch, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth, width):
        super().__init__()
        block, sizes = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}[
            depth
        ]
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, in_ch = [], width
        for s, n in enumerate(sizes):
            for i in range(n):
                layers.append(block(in_ch, width * 2**s, (1 if s == 0 else 2) if i == 0 else 1))
                in_ch = width * 2**s * block.expansion
        self.layers = nn.Sequential(*layers)
        self.num_features = in_ch

    def forward(self, x):
        return torch.mean(self.layers(self.stem(x)), dim=(2, 3))


def rodrigues(aa):  # (..., 3) -> (..., 3, 3)
    t2 = (aa * aa).sum(-1, keepdim=True)
    t = torch.sqrt(t2 + 1e-12)
    a, b = torch.sin(t) / t, (1 - torch.cos(t)) / (t2 + 1e-12)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


class Regressor(nn.Module):
    def __init__(self, in_features, n_iter, hidden=1024, dropout=0.5):
        super().__init__()
        from hmr_jax.models import regressor as reg_lib  # pylint: disable=g-import-not-at-top

        mean = np.concatenate([np.asarray(m, np.float32).ravel() for m in reg_lib.default_mean_params("aa")])
        self.register_buffer("mean", torch.tensor(mean))
        n_out = mean.size
        self.fc1 = nn.Linear(in_features + n_out, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_out)
        nn.init.xavier_uniform_(self.out.weight, gain=0.01)
        self.n_iter = n_iter

    def forward(self, feats):
        params = self.mean.expand(feats.shape[0], -1)
        its = []
        for _ in range(self.n_iter):
            x = torch.cat([feats, params], -1)
            x = self.drop(torch.relu(self.fc1(x)))
            x = self.drop(torch.relu(self.fc2(x)))
            params = params + self.out(x)
            its.append(params)
        allp = torch.stack(its)  # (n, B, 85)
        return allp[..., :72], allp[..., 72:82], allp[..., 82:]


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.joint = nn.Sequential(nn.Linear(9, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.joint_out_w = nn.Parameter(torch.randn(23, 32) / np.sqrt(32))
        self.joint_out_b = nn.Parameter(torch.zeros(23))
        self.pose = nn.Sequential(nn.Linear(736, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1))
        self.shape = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1))

    def forward(self, rotmat23, betas):
        b = rotmat23.shape[0]
        f = self.joint(rotmat23.reshape(b, 23, 9))  # (B, 23, 32)
        joint_logits = torch.einsum("bjc,jc->bj", f, self.joint_out_w) + self.joint_out_b
        return torch.cat([joint_logits, self.pose(f.reshape(b, -1)), self.shape(betas)], -1)  # (B, 25)


def smpl_forward_fn(smpl_arrays):
    """SMPL arrays in the file layout (shapedirs (V, 3, K), posedirs (V, 3, 207), kintree_table)
    -> `(betas (B, K), rotmat (B, 24, 3, 3)) -> (vertices (B, V, 3), joints (B, 24, 3))` via smplx."""
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    parents = np.asarray(smpl_arrays["kintree_table"])[0].astype(np.int64)
    parents[0] = -1
    smpl_t = dict(
        v_template=t(smpl_arrays["v_template"]),
        shapedirs=t(smpl_arrays["shapedirs"]),
        posedirs=t(np.asarray(smpl_arrays["posedirs"]).reshape(-1, 207).T),
        J_regressor=t(smpl_arrays["J_regressor"]),
        parents=torch.tensor(parents),
        lbs_weights=t(smpl_arrays["weights"]),
    )

    def smpl_forward(betas, rotmat):
        return smplx.lbs.lbs(betas, rotmat, pose2rot=False, **smpl_t)

    return smpl_forward


def generator(config):
    """(encoder, regressor) for a config's model.depth / width / n_iter / hidden / dropout."""
    encoder = ResNet(config.model.depth, config.model.width)
    regressor = Regressor(encoder.num_features, config.model.n_iter, config.model.hidden[0], config.model.dropout)
    return encoder, regressor

"""The HMR generator (ResNet encoder + iterative regressor) and the functional boundary.

Outside `hmr_jax.models` nobody touches NNX: build once, split into a static `graphdef` and
pure nested dicts of arrays, and call the pure `apply_*` functions inside `jax.jit`:

    graphdef, params, batch_stats = init_generator(key, depth=50, ...)
    d_graphdef, d_params = init_discriminator(key)
    outputs, batch_stats = apply_generator(graphdef, params, batch_stats, images, rng, train=True)
    logits = apply_discriminator(d_graphdef, d_params, outputs["pose_rotmat"][:, 1:], outputs["betas"])

`graphdef` is a pytree without leaves (hashable, static): it can be passed as a jit argument,
closed over, or returned from `jax.jit`/`jax.eval_shape` (for sharded init:
`jax.eval_shape(functools.partial(init_generator, **kw), key)` gives the abstract params).
`params` holds every `nnx.Param` (what the optimiser updates), `batch_stats` every
`nnx.BatchStat` (BatchNorm running mean/var; updated by `apply_generator(train=True)`).
Both are plain nested dicts with string keys, top level {"encoder", "regressor"} (params; plus
"keypoint_head" when the model has one) and {"encoder"} (batch_stats). The regressor's mean
parameters are static (in the graphdef).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from hmr_jax import geometry, skeleton
from hmr_jax.models import discriminator as discriminator_lib
from hmr_jax.models import keypoint_head as keypoint_head_lib
from hmr_jax.models import regressor as regressor_lib
from hmr_jax.models import resnet


class HMR(nnx.Module):
    """Generator: images (B, H, W, 3), ImageNet-normalised -> SMPL pose/shape and camera.

    With a `keypoint_head` the regressor reads the pooled features concatenated with the head's
    2D keypoints (B, J, 2) (flattened, [-1, 1] crop coordinates, times `keypoint_scale`); without
    one, the pooled features alone (HMR as published).

    `keypoint_scale`: on person crops each keypoint coordinate varies by only ~0.1 (std) around
    its mean, ~10x less than a unit input; Adam moves every first-layer weight by about the
    learning rate whatever its input's scale, so such small inputs change the regressor's output
    ~10x slower. Scaling them up (8 on the quickstart) made the regressor learn to lift 2D to 3D
    far faster.
    """

    def __init__(
        self,
        encoder: resnet.ResNet,
        regressor: regressor_lib.Regressor,
        keypoint_head: keypoint_head_lib.KeypointHead | None = None,
        keypoint_scale: float = 1.0,
    ):
        self.encoder = encoder
        self.regressor = regressor
        self.keypoint_head = keypoint_head
        self.keypoint_scale = float(keypoint_scale)

    def __call__(
        self,
        images: Float[Array, "b h w 3"],
        *,
        train: bool,
        rng: jax.Array | None = None,
        lift_keypoints: Float[Array, "b j 3"] | None = None,
    ) -> dict[str, Any]:
        """Forward pass.

        Args:
          images: (B, H, W, 3) float, ImageNet-normalised RGB.
          train: BatchNorm uses batch statistics (and updates its running ones) and dropout is
            active when True; running statistics and no dropout when False.
          rng: PRNG key for dropout, required when train=True (and dropout > 0).
          lift_keypoints: (B, J, 3) keypoints (normalised x, y; visibility) to run the regressor a
            second time with, in place of the head's (the lifting pass: training only, needs the
            head); where the visibility is 0 the head's own keypoint (without gradient) is used.

        The mode is this explicit argument (NNX's `model.train()` / `model.eval()` flags are
        not used), so one graphdef serves both modes.

        Returns dict: pose_rotmat (B,24,3,3), betas (B,10), cam (B,3), theta (B,72|144) -- the
        last iteration -- and iterations = {pose_rotmat (n,B,24,3,3), betas (n,B,10),
        cam (n,B,3), theta (n,B,72|144)} stacked over the n = n_iter iterations; with the head
        also keypoints_2d (B,J,2) and keypoint_logits (B,h,w,J) (its heatmaps), and with
        `lift_keypoints` lift = the lifting pass's last iteration {pose_rotmat, betas, cam, theta}.
        """
        if self.keypoint_head is None:
            if lift_keypoints is not None:
                raise ValueError("HMR: lift_keypoints needs a keypoint head (model.keypoint_head.enabled)")
            pooled, keypoints = self.encoder(images, train=train), None  # (B, F)
        else:
            pooled, stages = self.encoder(images, train=train, return_stages=True)  # (B, F), 4 maps
            keypoint_logits = self.keypoint_head.logits(stages)  # (B, h, w, J)
            keypoints = keypoint_head_lib.soft_argmax(keypoint_logits)  # (B, J, 2)

        def regress(kp, key):  # the regressor on the pooled features (+ flattened, scaled keypoints)
            if kp is None:
                return self.regressor(pooled, train=train, rng=key)
            flat = self.keypoint_scale * kp.reshape(kp.shape[0], -1)
            return self.regressor(jnp.concatenate([pooled, flat], axis=-1), train=train, rng=key)

        its = regress(keypoints, rng)
        out = {k: v[-1] for k, v in its.items()}
        out["iterations"] = its
        if keypoints is not None:
            out["keypoints_2d"] = keypoints
            out["keypoint_logits"] = keypoint_logits
        if lift_keypoints is not None:
            if lift_keypoints.shape != keypoints.shape[:-1] + (3,):
                raise ValueError(
                    f"HMR: lift_keypoints must be (B, J, 3) for the head's {keypoints.shape}, "
                    f"found {lift_keypoints.shape}"
                )
            given = jnp.where(
                lift_keypoints[..., 2:] > 0, lift_keypoints[..., :2], jax.lax.stop_gradient(keypoints)
            )  # (B, J, 2)
            lift = regress(given, None if rng is None else jax.random.fold_in(rng, 1))
            out["lift"] = {k: v[-1] for k, v in lift.items()}
        return out


def build_generator(
    *,
    depth: int = 50,
    width: int = 64,
    dtype: Any = "float32",
    rot_repr: str = "aa",
    mean_pose: Any = None,
    mean_betas: Any = None,
    mean_cam: Any = None,
    hidden: Sequence[int] = (1024, 1024),
    hidden_activation: str = "relu",
    dropout: float = 0.5,
    n_iter: int = 5,
    final_init_gain: float = 0.01,
    bn_momentum: float = 0.9,
    zero_init_residual: bool = False,
    keypoint_head: Mapping[str, int] | None = None,
    rngs: nnx.Rngs,
) -> HMR:
    """Build the NNX generator. Mean params default to `regressor.default_mean_params(rot_repr)`
    (each of mean_pose / mean_betas / mean_cam left None takes its default). `keypoint_head`:
    None (HMR as published) or {'num_keypoints': J, 'channels': C, 'stride': 8 | 4 (`KeypointHead`),
    'input_scale': s (`HMR`'s keypoint_scale)}; stride and input_scale default to 8 and 1."""
    d_pose, d_betas, d_cam = regressor_lib.default_mean_params(rot_repr)
    encoder = resnet.resnet_from_config(
        depth, width=width, dtype=dtype, bn_momentum=bn_momentum, zero_init_residual=zero_init_residual, rngs=rngs
    )
    head = None
    in_features = encoder.num_features
    if keypoint_head is not None:
        head = keypoint_head_lib.KeypointHead(
            encoder.stage_channels,
            keypoint_head["num_keypoints"],
            channels=keypoint_head["channels"],
            stride=keypoint_head.get("stride", 8),
            dtype=dtype,
            rngs=rngs,
        )
        in_features += 2 * head.num_keypoints
    regressor = regressor_lib.Regressor(
        in_features,
        d_pose if mean_pose is None else mean_pose,
        d_betas if mean_betas is None else mean_betas,
        d_cam if mean_cam is None else mean_cam,
        rot_repr=rot_repr,
        hidden=tuple(hidden),
        hidden_activation=hidden_activation,
        dropout=dropout,
        n_iter=n_iter,
        final_init_gain=final_init_gain,
        rngs=rngs,
    )
    return HMR(
        encoder, regressor, head, keypoint_scale=1.0 if keypoint_head is None else keypoint_head.get("input_scale", 1.0)
    )


def build_discriminator(*, rngs: nnx.Rngs, **kwargs: Any) -> discriminator_lib.Discriminator:
    """Build the NNX discriminator ensemble (kwargs: joint_hidden, pose_hidden, shape_hidden, num_betas)."""
    return discriminator_lib.Discriminator(rngs=rngs, **kwargs)


def split_generator(model: HMR) -> tuple[nnx.GraphDef, dict[str, Any], dict[str, Any]]:
    """NNX generator -> (graphdef, params, batch_stats), the latter two pure nested dicts."""
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    if jax.tree_util.tree_leaves(rest):
        raise ValueError(f"split_generator: unexpected non-Param, non-BatchStat state: {rest}")
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def split_discriminator(model: discriminator_lib.Discriminator) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """NNX discriminator -> (graphdef, params)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        raise ValueError(f"split_discriminator: unexpected non-Param state: {rest}")
    return graphdef, nnx.to_pure_dict(params)


def init_generator(key: jax.Array, **kwargs: Any) -> tuple[nnx.GraphDef, dict[str, Any], dict[str, Any]]:
    """Initialise a generator from a PRNG key; kwargs as `build_generator`.

    Pure in `key`: usable under `jax.jit(functools.partial(init_generator, **kw), out_shardings=...)`
    and `jax.eval_shape` (the graphdef has no array leaves).
    """
    return split_generator(build_generator(rngs=nnx.Rngs(params=key), **kwargs))


def init_discriminator(key: jax.Array, **kwargs: Any) -> tuple[nnx.GraphDef, dict[str, Any]]:
    """Initialise the discriminator from a PRNG key; kwargs as `build_discriminator`."""
    return split_discriminator(build_discriminator(rngs=nnx.Rngs(params=key), **kwargs))


def apply_generator(
    graphdef: nnx.GraphDef,
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    images: Float[Array, "b h w 3"],
    rng: jax.Array | None,
    train: bool,
    lift_keypoints: Float[Array, "b j 3"] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pure generator forward: -> (outputs, new_batch_stats).

    `train` must be a Python bool (static). With train=True the BatchNorm layers normalise with
    the batch statistics and return updated running statistics, and dropout uses `rng` (a PRNG
    key; required). With train=False `new_batch_stats` is `batch_stats` unchanged and `rng` is
    ignored (may be None). `lift_keypoints`: see `HMR.__call__`. Outputs: see `HMR.__call__`.
    """
    model = nnx.merge(graphdef, params, batch_stats)
    outputs = model(images, train=train, rng=rng, lift_keypoints=lift_keypoints)
    if not train:
        return outputs, dict(batch_stats)
    return outputs, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


# Mirroring a camera-frame body in x (a horizontal image flip about the crop centre): each
# rotation R -> M R M with M = diag(-1, 1, 1), i.e. R's entries times these signs.
_MIRROR_SIGNS = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]], np.float32)


def mirror_outputs(out: Mapping[str, Array], keypoint_flip_perm: Sequence[int] | None = None) -> dict[str, Array]:
    """The prediction for the mirror image of the crop, from the prediction `out` for the crop:
    pose_rotmat (B, 24, 3, 3) left/right joints swapped (`skeleton.SMPL24_FLIP_PERM`) and mirrored, betas as
    they are, cam (s, tx, ty) -> (s, -tx, ty), and, given the dataset joint set's flip permutation,
    keypoints_2d (B, J, 2) ([-1, 1] crop coordinates) swapped with x negated."""
    res = {
        "pose_rotmat": out["pose_rotmat"][:, np.asarray(skeleton.SMPL24_FLIP_PERM)] * _MIRROR_SIGNS,
        "betas": out["betas"],
        "cam": out["cam"] * jnp.array([1.0, -1.0, 1.0]),
    }
    if "keypoints_2d" in out and keypoint_flip_perm is not None:
        res["keypoints_2d"] = out["keypoints_2d"][:, np.asarray(keypoint_flip_perm)] * jnp.array([-1.0, 1.0])
    return res


def apply_generator_flip_test(
    graphdef: nnx.GraphDef,
    params: Mapping[str, Any],
    batch_stats: Mapping[str, Any],
    images: Float[Array, "b h w 3"],
    keypoint_flip_perm: Sequence[int] | None = None,
) -> dict[str, Array]:
    """Flip test (test-time augmentation): the eval-mode generator on the crops and on their mirror
    images (one batch of 2B), the second prediction mirrored back (`mirror_outputs`) and the two
    averaged: rotations as the nearest rotation to their mean, betas and camera as means; the head's
    keypoints as means given the joint set's flip permutation, else the crops' own. -> {pose_rotmat,
    betas, cam[, keypoints_2d]} for (B, ...) (no per-iteration outputs)."""
    b = images.shape[0]
    out, _ = apply_generator(
        graphdef, params, batch_stats, jnp.concatenate([images, images[:, :, ::-1]], axis=0), None, train=False
    )
    keys = ["pose_rotmat", "betas", "cam"] + (["keypoints_2d"] if "keypoints_2d" in out else [])
    plain = {k: out[k][:b] for k in keys}
    mirrored = mirror_outputs({k: out[k][b:] for k in keys}, keypoint_flip_perm)
    avg = {k: 0.5 * (plain[k] + mirrored[k]) if k in mirrored else plain[k] for k in keys}
    avg["pose_rotmat"] = geometry.nearest_rotation(avg["pose_rotmat"])
    return avg


def apply_discriminator(
    graphdef: nnx.GraphDef, params: Mapping[str, Any], pose_rotmat: Float[Array, "b 23 3 3"], betas: Float[Array, "b k"]
) -> Float[Array, "b 25"]:
    """Pure discriminator forward: body-joint rotations (B,23,3,3) -- i.e. `pose_rotmat[:, 1:]`
    of a (B,24,3,3) SMPL pose -- and betas (B,10) -> logits (B,25), columns
    [23 joints (SMPL joints 1..23), whole pose, shape]."""
    model = nnx.merge(graphdef, params)
    return model(pose_rotmat, betas)


def load_pretrained_encoder(
    params: Mapping[str, Any], batch_stats: Mapping[str, Any], path: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace params["encoder"] and batch_stats["encoder"] by the arrays of an encoder .npz
    (written by tools/convert_resnet50_weights.py). Raises ValueError naming the first
    missing/extra/mis-shaped entry when the file does not fit the generator's encoder."""
    enc_params, enc_stats = resnet.load_encoder_params(path)
    new_params = dict(params)
    new_stats = dict(batch_stats)
    new_params["encoder"] = replace_checked(params["encoder"], enc_params, f"{path}: encoder params")
    new_stats["encoder"] = replace_checked(batch_stats["encoder"], enc_stats, f"{path}: encoder batch_stats")
    return new_params, new_stats


def replace_checked(target: Mapping[str, Any], source: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`source`'s arrays in `target`'s layout and dtypes; a ValueError naming `where` and the
    missing / unexpected / mis-shaped entries when the two trees differ."""
    t_flat = dict(_flat_items(target))
    s_flat = dict(_flat_items(source))
    missing = sorted(set(t_flat) - set(s_flat))
    extra = sorted(set(s_flat) - set(t_flat))
    if missing or extra:
        raise ValueError(
            f"{where}: layout mismatch; missing {missing[:5]} (of {len(missing)}), "
            f"unexpected {extra[:5]} (of {len(extra)}) -- check model depth/width"
        )
    for k, v in t_flat.items():
        if tuple(np.shape(s_flat[k])) != tuple(v.shape):
            raise ValueError(f"{where}: {k}: expected shape {tuple(v.shape)}, found {np.shape(s_flat[k])}")
    return _unflatten({k: jnp.asarray(s_flat[k], dtype=t_flat[k].dtype) for k in t_flat})


def _flat_items(tree: Mapping[str, Any], prefix: str = ""):
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from _flat_items(v, key)
        else:
            yield key, v


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split("/")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


__all__ = [
    "HMR",
    "build_generator",
    "build_discriminator",
    "split_generator",
    "split_discriminator",
    "init_generator",
    "init_discriminator",
    "apply_generator",
    "apply_discriminator",
    "load_pretrained_encoder",
]

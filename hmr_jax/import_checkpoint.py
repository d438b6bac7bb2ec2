"""SPIN's or mmhuman3d's HMR checkpoint -> an hmr_jax workdir (no code from the file runs).

    python -m hmr_jax.import_checkpoint --format=spin --checkpoint=model_checkpoint.pt \
        --out=workdirs/spin [--body-model=SMPL_NEUTRAL.pkl]

The workdir is what training writes: config.json / config.py (configs/h36m_hmr.py with the
imported model: ResNet-50, 6d rotations, 3 iterations of a 2 x 1024 regressor without activation
between its layers, SPIN's mean parameters, 224 px crops, focal length 5000 px at 224 px) and an
orbax checkpoint of a full `TrainState` (step 0; the generator's weights from the file, the
discriminator and optimiser states freshly initialised), so `hmr_jax.predict`, `hmr_jax.evaluate`
and training read it like their own.

Formats (`hmr_jax.models.torch_weights`): 'spin' -- a torch.save dict whose 'model' entry is the
state dict (SPIN's model_checkpoint.pt; VIBE's spin_model_checkpoint.pth.tar); 'mmhuman3d' -- an
mmcv checkpoint whose 'state_dict' has `backbone.` and `head.` keys. Either may also be a
.safetensors file of the (prefixed) state dict. torch (CPU build) is needed for torch files only.
"""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import config_checks, config_files
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.models import hmr as hmr_lib
from hmr_jax.models import torch_weights

FORMATS = ("spin", "mmhuman3d")
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "h36m_hmr.py")


def imported_config(body_model_path: str = "") -> ml_collections.ConfigDict:
    """configs/h36m_hmr.py's config with SPIN's model (mean parameters still empty)."""
    config = config_files.load(BASE_CONFIG)
    m = config.model
    m.depth, m.width, m.dtype = 50, 64, "float32"
    m.rot_repr = "6d"
    m.hidden = (1024, 1024)
    m.hidden_activation = "none"
    m.dropout = 0.5
    m.n_iter = 3
    m.bn_momentum = 0.9  # torch's momentum 0.1
    m.keypoint_head.enabled = False
    m.pretrained_encoder = ""
    m.mean_params = "zero"  # the filled mean_pose / mean_betas below take precedence
    config.data.img_size = 224
    config.images.focal_length_224 = 5000.0
    config.body_model_path = body_model_path
    return config


def load_generator(path: str, fmt: str, config: ml_collections.ConfigDict):
    """Read `path` and map it onto the generator of `config` -> (params, batch_stats, means)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {list(FORMATS)}, found {fmt!r}")
    raw = torch_weights.read_checkpoint(path)
    sd = torch_weights.hmr_state_dict(raw, fmt, str(path))
    kw = state_lib.generator_kwargs(config)
    _, ref_params, ref_stats = jax.eval_shape(lambda k: hmr_lib.init_generator(k, **kw), jax.random.PRNGKey(0))
    return torch_weights.hmr_params_from_spin(sd, ref_params, ref_stats, where=str(path))


def import_checkpoint(path: str, fmt: str, out: str, body_model_path: str = "") -> ml_collections.ConfigDict:
    """Write workdir `out` from checkpoint `path` in format `fmt`; returns the config written."""
    config = imported_config(body_model_path)
    params, stats, means = load_generator(path, fmt, config)
    config.model.mean_pose = tuple(float(v) for v in means["pose"])
    config.model.mean_betas = tuple(float(v) for v in means["betas"])
    config.model.mean_cam = tuple(float(v) for v in means["cam"])
    config.train.num_steps = max(int(config.train.num_steps), 1)
    config_checks.validate_config(config, stage="predict")
    if os.path.exists(os.path.join(out, "checkpoints")):
        raise FileExistsError(f"--out {out!r}: already holds checkpoints; choose a new folder")
    os.makedirs(out, exist_ok=True)
    parts = state_lib.make_static_parts(config)
    state = jax.jit(lambda k: state_lib.init_state(config, parts, k))(jax.random.PRNGKey(config.seed))
    gen_params = jax.tree.map(lambda ref, v: jnp.asarray(v, ref.dtype), state.gen_params, params)
    gen_stats = jax.tree.map(lambda ref, v: jnp.asarray(v, ref.dtype), state.gen_batch_stats, stats)
    state = dataclasses.replace(
        state, gen_params=gen_params, gen_batch_stats=gen_stats, gen_opt_state=jax.jit(parts.gen_tx.init)(gen_params)
    )
    workdir_lib.write_config(config, out)
    manager = ckpt_lib.make_manager(os.path.join(out, "checkpoints"), keep=1)
    meta = {"best_metric": None, "best_step": None, "bad_evals": 0, "stopped_early": False, "imported_from": fmt}
    ckpt_lib.save(manager, 0, state, meta)
    ckpt_lib.finish(manager)
    return config


def main(argv: list[str] | None = None) -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--checkpoint", required=True, help=".pt / .pth / .tar / .safetensors file")
    parser.add_argument("--out", required=True, help="workdir to write")
    parser.add_argument("--body-model", default="", help="SMPL model (.pkl / .npz) the workdir uses")
    args = parser.parse_args(argv)
    try:
        import_checkpoint(args.checkpoint, args.format, args.out, args.body_model)
    except (OSError, ValueError, ImportError) as e:
        sys.exit(f"import_checkpoint: {e}")
    print(f"wrote {args.out} ({args.format} checkpoint {args.checkpoint})")


if __name__ == "__main__":
    main()

"""What a run keeps in its workdir: config.json / config.py, metric writers and metrics.jsonl, image
grids, and checkpoint restoring for evaluate / predict."""

import copy
import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from clu import metric_writers

from hmr_jax import body_model, render
from hmr_jax import checkpoint as ckpt_lib
from hmr_jax.config_checks import ConfigError
from hmr_jax.data import augment as augment_lib
from hmr_jax.models import hmr as hmr_lib
from hmr_jax.state import StaticParts, TrainState, abstract_state, make_static_parts

METRICS_FILE = "metrics.jsonl"


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The resolved config as workdir/config.json and a python file defining `get_config()`."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(workdir, "config.py"), "w") as f:
        f.write(
            '"""Resolved config of this run (written by hmr_jax.train); usable as --config."""\n\n'
            "import json\n\nimport ml_collections\n\n_CONFIG = r'''\n" + text + "\n'''\n\n\n"
            "def get_config(arg=None):\n    del arg\n"
            "    return ml_collections.ConfigDict(json.loads(_CONFIG))\n"
        )


def make_writer(workdir: str, is_main: bool):
    """clu metric writer (TensorBoard + logging) on process 0, logging only elsewhere."""
    return metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=False)


class MetricsLog:
    """workdir/metrics.jsonl, one JSON object per line ({'step': n, name: value, ...}).

    A resumed run continues the log from its checkpoint's step: rows of later steps (logged by the
    interrupted run after its last checkpoint, and logged again as the resumed run repeats those
    steps) are dropped when the log is opened, so each step's rows appear once.
    """

    def __init__(self, workdir: str, start_step: int, enabled: bool = True):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.enabled = enabled
        if enabled and os.path.exists(self.path):
            with open(self.path) as f:
                rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= start_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(rows)
            os.replace(tmp, self.path)

    def append(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def draw_predictions(
    images: np.ndarray, vertices: np.ndarray, faces: np.ndarray, focal: float, cols: int, min_size: int = 128
) -> np.ndarray:
    """Contact sheet: each input crop beside the predicted mesh drawn over it (uint8)."""
    mean, std = np.asarray(augment_lib.IMAGENET_MEAN), np.asarray(augment_lib.IMAGENET_STD)
    tiles = []
    for img, verts in zip(images, vertices):
        rgb = np.clip((img * std + mean) * 255.0, 0, 255).astype(np.uint8)  # (H, W, 3)
        up = max(1, min_size // rgb.shape[0])  # small crops: render at a viewable size
        rgb = np.repeat(np.repeat(rgb, up, axis=0), up, axis=1)
        h, w = rgb.shape[:2]
        result = render.render_mesh(verts, faces, focal * up, (w / 2.0, h / 2.0), (h, w))
        tiles += [rgb, render.overlay(rgb, result)]
    return render.contact_sheet(tiles, cols=2 * cols)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config `hmr_jax.train` wrote into `workdir` (config.json), unlocked."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--workdir {workdir!r}: expected the run's config.json (written by hmr_jax.train), found no file {path!r}"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def parse_checkpoint(value: str) -> str | int:
    """'best' | 'latest' | a step number (int)."""
    value = str(value).strip()
    if value in ("best", "latest"):
        return value
    if value.isdigit():
        return int(value)
    raise ValueError(f"--checkpoint: expected 'best', 'latest' or a step number, found {value!r}")


def restore_checkpoint(workdir: str, config, parts: StaticParts, mesh, which: str | int = "best"):
    """Restore DIR/checkpoints ('best', 'latest' or a step) -> (state, meta, step, note).

    `note` says what was loaded ('best' falls back to the latest when no best was recorded).
    """
    ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"--workdir {workdir!r}: expected checkpoints in {ckpt_dir!r}, found no directory")
    # No preservation policy and no saves: this manager deletes nothing.
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"--workdir {workdir!r}: expected a checkpoint in {ckpt_dir!r}, found none")
    abstract = abstract_state(config, parts, mesh)
    try:  # an absent step: ValueError naming the steps
        state, meta = ckpt_lib.restore(manager, abstract, which)
    except ckpt_lib.CheckpointCorruptError as e:
        raise ckpt_lib.CheckpointCorruptError(f"{e} (--checkpoint=STEP picks one)") from None
    finally:
        manager.close()
    note = f"step {which}" if isinstance(which, int) else which
    if which == "best" and (meta.get("best_step") is None or meta.get("best_step") not in steps):
        note = "best requested, none recorded: latest"
    step = int(jax.device_get(state.step))
    return state, meta, step, note


def body_model_path(config) -> str:
    """The body model the run trained with (config `body_model_path`, else the procedural default)."""
    return config.body_model_path or str(body_model.default_body_model_path())


def ensure_writable_folder(folder: str, label: str) -> str:
    """Create `folder` if needed and check that files can be written in it (a probe file is created
    and removed); else a ValueError naming `label` and why. Returns its absolute path."""
    path = parent = os.path.abspath(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{label}: expected a folder, found a file")
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{label}: cannot create a folder under {parent!r}, which is a file")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe_"):
            pass
    except OSError as e:
        raise ValueError(f"{label}: expected a writable folder, cannot write in {path!r} ({e.strerror or e})") from None
    return path


# The keys that make two generators the same function of their weights.
ARCHITECTURE_KEYS = (
    "depth",
    "width",
    "rot_repr",
    "hidden",
    "hidden_activation",
    "n_iter",
    "keypoint_head.enabled",
    "keypoint_head.channels",
    "keypoint_head.num_keypoints",
    "keypoint_head.stride",
    "keypoint_head.input_scale",
)


def start_from_run(config: ml_collections.ConfigDict, run_dir: str) -> ml_collections.ConfigDict:
    """`config` with the regressor's mean parameters of the run in `run_dir` (model.init_from), so
    that fine-tuning starts from exactly that model. Its architecture keys must be the config's:
    else a ConfigError naming the first that differs."""
    source = load_run_config(run_dir)
    for key in ARCHITECTURE_KEYS:
        ours, theirs = config.model, source.model
        for part in key.split("."):
            ours, theirs = ours[part], theirs[part]
        if tuple(np.atleast_1d(ours)) != tuple(np.atleast_1d(theirs)):
            raise ConfigError(
                f"config 'model.init_from': {run_dir!r} has model.{key} = {theirs!r}, this config {ours!r}; "
                "set them alike to start from it"
            )
    config = copy.deepcopy(config)
    config.model.mean_pose = tuple(source.model.mean_pose)
    config.model.mean_betas = tuple(source.model.mean_betas)
    config.model.mean_cam = tuple(source.model.mean_cam)
    return config


def generator_weights_from_run(state: TrainState, parts: StaticParts, run_dir: str, mesh) -> TrainState:
    """`state` with the generator's parameters and batch statistics of `run_dir`'s latest checkpoint
    (restored with that run's own config), checked array by array against this state's shapes; the
    generator's optimiser state starts afresh, the step at 0."""
    source_config = load_run_config(run_dir)
    source, _, step, _ = restore_checkpoint(run_dir, source_config, make_static_parts(source_config), mesh, "latest")
    where = f"model.init_from {run_dir!r} (step {step})"
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(
        hmr_lib.replace_checked(state.gen_params, source.gen_params, f"{where}: params"), replicated
    )
    stats = jax.device_put(
        hmr_lib.replace_checked(state.gen_batch_stats, source.gen_batch_stats, f"{where}: batch_stats"), replicated
    )
    opt_state = jax.jit(parts.gen_tx.init, out_shardings=jax.tree.map(lambda _: replicated, state.gen_opt_state))(
        params
    )
    return dataclasses.replace(state, gen_params=params, gen_batch_stats=stats, gen_opt_state=opt_state)

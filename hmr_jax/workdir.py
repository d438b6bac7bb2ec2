"""What a run keeps in its workdir: config.json / config.py, metric writers and metrics.jsonl, image
grids, and checkpoint restoring for evaluate / predict."""

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
from hmr_jax.data import augment as augment_lib
from hmr_jax.state import StaticParts, abstract_state

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

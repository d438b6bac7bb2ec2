"""Evaluate a trained HMR checkpoint on a split: metrics table, mean-pose baseline, Human3.6M protocols.

    python -m hmr_jax.evaluate --workdir=DIR [--split=validation] [--checkpoint=best|latest|STEP]
        [--h36m-regressor=J_regressor_h36m.npy] [--batch-size=N] [--out=FILE.json] [--[no]flip_test]

Reads the resolved config that `hmr_jax.train` wrote (DIR/config.json) and the checkpoint in
DIR/checkpoints, runs a jit-compiled per-sample evaluation step over the split (batches sharded
over the mesh axis 'data' of all devices, as in training), prints a table and writes it as JSON
(default DIR/eval/<split>_step<step>.json). With the flip test (config eval.flip_test, or
--flip_test) the model's prediction is averaged with its mirrored prediction for the mirror image
(`trainer.make_inference`).

Metrics (per sample, then averaged over the samples that have the labels they need):
MPJPE and PA-MPJPE (mm, the dataset's joint set, GT-confidence weighted, as the trainer's
validation), PVE (mm, pelvis-aligned meshes), v2v L2 (m^2, the report's score, no alignment),
`pose_outside_limits` (share of the 23 body joints outside simple anatomical limits; see
`metrics.pose_outside_limits`). The same numbers for the mean-pose baseline: the prediction the
regressor starts from (its mean pose, shape and camera), whatever the image ('baseline'), and,
for folder datasets, the training split's mean pose and shape (`trainer.training_mean_body`, the
trainer's val/mean_baseline; 'train_mean_baseline').

Per action: when the image names are Human3.6M's ('S9_Directions_1.60457274_000001.jpg'), each
metric is also given per action (trial numbers merged, 'TakingPhoto' -> 'Photo', 'WalkingDog' ->
'WalkDog').

Human3.6M protocols (when a 17-joint H36M regressor is given by --h36m-regressor or the config key
`eval.h36m_regressor` / `data.h36m_regressor`): as SPIN, the 17 joints are regressed from the predicted mesh, centred on
their pelvis (joint 0) and the 14 LSP joints kept; the ground truth is the dataset's 3D joints
(spin24 sets: `joints.SPIN24_TO_J14`, already pelvis-centred in SPIN's files) or, for samples
without 3D joints, the same 14 joints regressed from the ground-truth mesh. MPJPE (no further
alignment) and PA-MPJPE in mm over:
  * Protocol 1: subjects S9 and S11, every 5th frame, all cameras;
  * Protocol 2: the same, camera 60457274 only.
"Every 5th frame" keeps frames f with (f - f0) % 5 == 0, f0 the first frame of that sequence
(subject, action, camera) in the file: SPIN's frames 1, 6, 11, ... of the full videos, and all
frames of files already subsampled that way (SPIN's h36m_valid_protocol*.npz). When the names do
not carry subject/camera/frame, the H36M-joint metrics are reported over the whole split instead
('all') and the protocols are marked as not applicable.
"""

import functools
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import joints as joints_lib
from hmr_jax import metrics as metrics_lib
from hmr_jax import smpl

METRICS = ("mpjpe", "pa_mpjpe", "pve", "v2v_l2", "pose_outside_limits")
H36M_METRICS = ("mpjpe", "pa_mpjpe")
UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm", "pve": "mm", "v2v_l2": "m^2", "pose_outside_limits": "share of 23 joints"}
# Which mask each metric is averaged under.
_METRIC_MASK = {
    "mpjpe": "joints",
    "pa_mpjpe": "joints",
    "pve": "smpl",
    "v2v_l2": "smpl",
    "pose_outside_limits": "valid",
}
H36M_EVAL_SUBJECTS = ("S9", "S11")
H36M_P2_CAMERA = "60457274"
H36M_FRAME_STRIDE = 5
H36M_REGRESSOR_KEYS = ("eval.h36m_regressor", "data.h36m_regressor")  # config keys, first set wins
H36M_REGRESSOR_NAME = "h36m17"
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
_BATCH_KEYS = ("image", "keypoints_2d", "joints_3d", "pose", "shape", "has_smpl", "has_joints_3d", "mask")


# ------------------------------------------------------------------------------------ run loading


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config `hmr_jax.train` wrote into `workdir` (config.json), unlocked."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--workdir {workdir!r}: expected the run's config.json (written by hmr_jax.train), found no file {path!r}"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def config_value(config: ml_collections.ConfigDict, key: str, default: Any = None) -> Any:
    """`config[a][b]...` for the dotted `key`, or `default` when a part is missing."""
    node = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            return default
    return node


def parse_checkpoint(value: str) -> str | int:
    """'best' | 'latest' | a step number (int)."""
    value = str(value).strip()
    if value in ("best", "latest"):
        return value
    if value.isdigit():
        return int(value)
    raise ValueError(f"--checkpoint: expected 'best', 'latest' or a step number, found {value!r}")


def abstract_state(config, models, mesh):
    """Shapes, dtypes and (replicated) shardings of the run's TrainState, allocating nothing."""
    from hmr_jax import trainer  # pylint: disable=g-import-not-at-top

    replicated = NamedSharding(mesh, P())
    shapes = jax.eval_shape(functools.partial(trainer.init_state, config, models), jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)


def restore_checkpoint(workdir: str, config, models, mesh, which: str | int = "best"):
    """Restore DIR/checkpoints ('best', 'latest' or a step) -> (state, meta, step, note).

    `note` says what was loaded ('best' falls back to the latest when no best was recorded).
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"--workdir {workdir!r}: expected checkpoints in {ckpt_dir!r}, found no directory")
    # No preservation policy and no saves: this manager deletes nothing.
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"--workdir {workdir!r}: expected a checkpoint in {ckpt_dir!r}, found none")
    abstract = abstract_state(config, models, mesh)
    state, meta = ckpt_lib.restore(manager, abstract, which)  # an absent step: ValueError naming the steps
    note = f"step {which}" if isinstance(which, int) else which
    if which == "best" and (meta.get("best_step") is None or meta.get("best_step") not in steps):
        note = "best requested, none recorded: latest"
    step = int(jax.device_get(state.step))
    manager.close()
    return state, meta, step, note


def body_model_path(config) -> str:
    """The body model the run trained with (config `body_model_path`, else the procedural default)."""
    from hmr_jax import body_model  # pylint: disable=g-import-not-at-top

    return config_value(config, "body_model_path", "") or str(body_model.default_body_model_path())


def load_h36m_regressor(path: str) -> np.ndarray:
    """The (17, V) Human3.6M regressor; any failure raises ValueError naming the file."""
    try:
        return joints_lib.load_regressor(path, 17)
    except Exception as e:  # pylint: disable=broad-except  (EOFError, zip errors, ...)
        raise ValueError(
            f"--h36m-regressor {path!r}: expected a (17, V) joint regressor .npy/.npz, "
            f"could not load it: {type(e).__name__}: {e}"
        ) from e


# ---------------------------------------------------------------------------------- the eval step


def regressor_start(config) -> dict[str, np.ndarray]:
    """The regressor's starting point, its fixed mean parameters: {'pose_rotmat' (24,3,3), 'betas' (10,),
    'cam' (3,)} -- what the model predicts before training, for any image (the mean-pose baseline).

    The same values `models.hmr.build_generator` gets from `trainer.generator_kwargs(config)`
    (their `mean_pose` / `mean_betas` / `mean_cam` if given, else `regressor.default_mean_params`).
    """
    from hmr_jax import trainer  # pylint: disable=g-import-not-at-top
    from hmr_jax.models import regressor as regressor_lib  # pylint: disable=g-import-not-at-top

    kw = trainer.generator_kwargs(config)
    rot_repr = kw.get("rot_repr", "aa")
    pose, betas, cam = regressor_lib.default_mean_params(rot_repr)
    if kw.get("mean_pose") is not None:
        pose = regressor_lib.convert_mean_pose(kw["mean_pose"], rot_repr)
    betas = np.asarray(kw["mean_betas"] if kw.get("mean_betas") is not None else betas, np.float32).reshape(-1)
    cam = np.asarray(kw["mean_cam"] if kw.get("mean_cam") is not None else cam, np.float32).reshape(-1)
    rotmat = np.asarray(regressor_lib.theta_to_rotmat(jnp.asarray(pose, jnp.float32), rot_repr), np.float32)
    return {"pose_rotmat": rotmat, "betas": betas, "cam": cam}


def _h36m_joints(reg, vertices):
    return metrics_lib.h36m_protocol_joints(joints_lib.regress(reg, vertices))  # (B, 14, 3)


def _training_mean(config, paths) -> dict[str, np.ndarray] | None:
    """The trainer's 'mean pose and shape' of the training split's labels (its val/mean_baseline), if any."""
    from hmr_jax import trainer  # pylint: disable=g-import-not-at-top

    fn = getattr(trainer, "training_mean_body", None)
    if fn is None or not config_value(config, "data.train_split", ""):
        return None
    try:
        return fn(config, paths)
    except (ValueError, FileNotFoundError) as e:
        logging.warning("training-set mean baseline unavailable: %s", e)
        return None


def make_sample_eval_step(models, joint_set: str, flip_test: bool = False) -> Callable:
    """Pure per-sample evaluation step (the model's prediction: `trainer.make_inference`, with
    `flip_test` the flip test's).

    `(state, batch, smpl_model, baselines, regressors) -> {name: (B,)}`; `baselines` maps names
    (e.g. 'baseline', 'train_mean') to constant predictions {'pose_rotmat' (24,3,3), 'betas' (10,)}.
    For `p` in 'model' and each baseline name: `p/mpjpe`, `p/pa_mpjpe`, `p/pve`, `p/v2v_l2`, `p/pose_outside_limits`
    (and `p/h36m_mpjpe`, `p/h36m_pa_mpjpe` when `regressors` holds 'h36m17'), `gt/pose_outside_limits`,
    and the masks `mask/valid`, `mask/joints`, `mask/smpl` (and `mask/h36m`) (1 = the value counts).
    Definitions and masks as `trainer.make_eval_step` (whose sums these per-sample values reproduce).
    """
    from hmr_jax import trainer  # pylint: disable=g-import-not-at-top

    infer = trainer.make_inference(models, flip_test=flip_test, joint_set=joint_set)

    def step(state, batch, smpl_model, baselines, regressors=None):
        out = infer(state, batch["image"])
        b = batch["image"].shape[0]
        gt_body = smpl.forward(smpl_model, batch["shape"], batch["pose"])
        gt_joints, conf = batch["joints_3d"][..., :3], batch["joints_3d"][..., 3]  # (B, J, 3), (B, J)
        valid = batch["mask"]
        m_smpl = valid * batch["has_smpl"]
        m_j3d = valid * batch["has_joints_3d"] * (jnp.sum(conf, axis=-1) > 0)
        safe_conf = jnp.where(m_j3d[:, None] > 0, conf, 1.0)
        h36m_reg = regressors.get(H36M_REGRESSOR_NAME) if regressors else None
        res = {
            "mask/valid": valid,
            "mask/joints": m_j3d,
            "mask/smpl": m_smpl,
            "gt/pose_outside_limits": _pose_outside_aa(batch["pose"]),
        }
        if h36m_reg is not None:
            gt14, w14, m14 = _h36m_ground_truth(
                joint_set, h36m_reg, gt_body.vertices, gt_joints, conf, batch["has_joints_3d"], m_smpl, valid
            )
            res["mask/h36m"] = m14
        preds = {"model": (out["pose_rotmat"], out["betas"])}
        for name, base in baselines.items():
            preds[name] = (
                jnp.broadcast_to(base["pose_rotmat"], (b, 24, 3, 3)),
                jnp.broadcast_to(base["betas"], (b, base["betas"].shape[-1])),
            )
        for name, (rotmat, betas) in preds.items():
            body = smpl.forward(smpl_model, betas, rotmat)
            pred_joints = joints_lib.model_joints(joint_set, body.joints, body.vertices, regressors)
            res[f"{name}/mpjpe"] = metrics_lib.mpjpe(pred_joints, gt_joints, root=joint_set, weights=safe_conf)
            res[f"{name}/pa_mpjpe"] = metrics_lib.pa_mpjpe(pred_joints, gt_joints, weights=safe_conf)
            res[f"{name}/pve"] = metrics_lib.pve(
                body.vertices, gt_body.vertices, body.joints[:, 0], gt_body.joints[:, 0]
            )
            res[f"{name}/v2v_l2"] = metrics_lib.v2v_l2(body.vertices, gt_body.vertices)
            res[f"{name}/pose_outside_limits"] = metrics_lib.pose_outside_limits(rotmat)
            if h36m_reg is not None:
                pred14 = _h36m_joints(h36m_reg, body.vertices)
                res[f"{name}/h36m_mpjpe"] = metrics_lib.mpjpe(pred14, gt14, root=None, weights=w14)
                res[f"{name}/h36m_pa_mpjpe"] = metrics_lib.pa_mpjpe(pred14, gt14, weights=w14)
        return res

    return step


def _pose_outside_aa(pose_aa):
    from hmr_jax import geometry  # pylint: disable=g-import-not-at-top

    rot = geometry.axis_angle_to_matrix(pose_aa.reshape(pose_aa.shape[:-1] + (24, 3)))  # (B, 24, 3, 3)
    return metrics_lib.pose_outside_limits(rot)


def _h36m_ground_truth(joint_set, reg, gt_vertices, gt_joints, conf, has_joints_3d, m_smpl, valid):
    """GT 14 LSP joints for the H36M protocol -> (joints (B,14,3), weights (B,14), mask (B,)).

    spin24 datasets with 3D joints: the file's joints (SPIN's `J24_TO_J14`), weighted by their
    confidence; otherwise (or smpl24 datasets) the 14 joints regressed from the GT mesh.
    """
    from_mesh = _h36m_joints(reg, gt_vertices)  # (B, 14, 3)
    ones = jnp.ones(from_mesh.shape[:2], from_mesh.dtype)
    if joint_set != "spin24":
        return from_mesh, ones, m_smpl
    idx = jnp.asarray(joints_lib.SPIN24_TO_J14)
    j14, c14 = gt_joints[:, idx], conf[:, idx]
    use_joints = (has_joints_3d * (jnp.sum(c14, axis=-1) > 0)) > 0  # (B,)
    gt = jnp.where(use_joints[:, None, None], j14, from_mesh)
    weights = jnp.where(use_joints[:, None], c14, ones)
    mask = jnp.where(use_joints, valid, m_smpl)
    return gt, weights, mask


# -------------------------------------------------------------------------------- sample metadata


def canonical_action(action: str) -> str:
    """'Directions_1' / 'Directions 1' -> 'Directions'; 'TakingPhoto' -> 'Photo'; 'WalkingDog' -> 'WalkDog'."""
    name = re.sub(r"[ _]\d+$", "", str(action))
    return _ACTION_ALIASES.get(name, name)


def sample_info(config, split: str, paths: tuple[str, str, str]) -> list[dict] | None:
    """Per sample of the split (by the pipeline's 'index'): imgname and, when known, H36M subject,
    action, camera, frame (from the name, else the annotation's fields). None for TFDS sources."""
    from hmr_jax.data import annotations as ann_lib  # pylint: disable=g-import-not-at-top

    if config_value(config, "data.source", "folder") != "folder":
        return None
    ann = ann_lib.load(paths[1])
    rows = (
        np.arange(len(ann)) if not split else ann_lib.split_indices(ann, split, val_fraction=config.data.val_fraction)
    )
    ann = ann.select(rows)
    info = []
    for i, name in enumerate(ann.imgname):
        parsed = ann_lib.parse_h36m_name(name)
        row = {"imgname": str(name), "h36m_name": parsed is not None}
        if parsed is not None:
            row.update(parsed)
        for key in ("subject", "action", "camera"):
            field = getattr(ann, key)
            if key not in row and field is not None:
                row[key] = str(field[i])
        if "subject" in row and re.fullmatch(r"\d+", row["subject"]):
            row["subject"] = f"S{row['subject']}"
        info.append(row)
    return info


def h36m_protocol_masks(info: Sequence[Mapping[str, Any]] | None) -> dict[str, np.ndarray] | None:
    """Boolean masks over the split's samples for Protocol 1 ('p1') and 2 ('p2'), or None when the
    samples lack subject, camera or frame (see the module docstring for the frame rule)."""
    if not info or not all(all(k in r for k in ("subject", "camera", "frame")) for r in info):
        return None
    first: dict[tuple, int] = {}
    for r in info:
        key = (r["subject"], r.get("action"), r["camera"])
        first[key] = min(first.get(key, r["frame"]), r["frame"])
    subject = np.array([r["subject"] in H36M_EVAL_SUBJECTS for r in info])
    stride = np.array(
        [(r["frame"] - first[(r["subject"], r.get("action"), r["camera"])]) % H36M_FRAME_STRIDE == 0 for r in info]
    )
    camera = np.array([str(r["camera"]) == H36M_P2_CAMERA for r in info])
    p1 = subject & stride
    return {"p1": p1, "p2": p1 & camera}


# ------------------------------------------------------------------------------------- aggregation


def summarize(
    values: Mapping[str, np.ndarray], select: np.ndarray | None = None, prefix: str = "model"
) -> dict[str, Any]:
    """Means of the per-sample `values` (concatenated step outputs) over `select` (bool, per sample)."""
    n = len(values["mask/valid"])
    select = np.ones(n, bool) if select is None else np.asarray(select, bool)
    out: dict[str, Any] = {}
    for metric in METRICS:
        mask = (values[f"mask/{_METRIC_MASK[metric]}"] > 0) & select
        out[metric] = float(np.mean(values[f"{prefix}/{metric}"][mask])) if mask.any() else None
    out["count"] = {k: int(np.sum((values[f"mask/{k}"] > 0) & select)) for k in ("valid", "joints", "smpl")}
    return out


def summarize_h36m(values: Mapping[str, np.ndarray], select: np.ndarray | None, prefix: str) -> dict[str, Any]:
    n = len(values["mask/valid"])
    select = np.ones(n, bool) if select is None else np.asarray(select, bool)
    mask = (values["mask/h36m"] > 0) & select
    out = {m: (float(np.mean(values[f"{prefix}/h36m_{m}"][mask])) if mask.any() else None) for m in H36M_METRICS}
    out["count"] = int(mask.sum())
    return out


def build_report(
    values: Mapping[str, np.ndarray], index: np.ndarray, info: Sequence[Mapping] | None, has_h36m: bool
) -> dict[str, Any]:
    """Overall / baseline / per-action / H36M-protocol summaries of the per-sample values."""
    report: dict[str, Any] = {
        "model": summarize(values, prefix="model"),
        "baseline": summarize(values, prefix="baseline"),
    }
    if "train_mean/mpjpe" in values:
        report["train_mean_baseline"] = summarize(values, prefix="train_mean")
    gt_mask = values["mask/smpl"] > 0
    report["ground_truth_pose_outside_limits"] = (
        float(np.mean(values["gt/pose_outside_limits"][gt_mask])) if gt_mask.any() else None
    )
    rows = [info[int(i)] for i in index] if info is not None else None
    if rows is not None and any(r["h36m_name"] for r in rows):
        actions = np.array([canonical_action(r["action"]) if r["h36m_name"] else "" for r in rows])
        report["per_action"] = {
            a: {p: summarize(values, actions == a, p) for p in ("model", "baseline")}
            for a in sorted(set(actions.tolist()) - {""})
        }
    if has_h36m:
        h36m: dict[str, Any] = {"joints": "14 LSP joints of the 17 regressed H36M joints, pelvis-centred"}
        masks = h36m_protocol_masks(rows)
        if masks is None:
            h36m["note"] = (
                "image names carry no H36M subject/camera/frame: Protocols 1 and 2 are not "
                "applicable; 'all' covers the whole split"
            )
            h36m["all"] = {p: summarize_h36m(values, None, p) for p in ("model", "baseline")}
        else:
            for name, desc in (
                ("p1", "S9, S11, every 5th frame, all cameras"),
                ("p2", f"S9, S11, every 5th frame, camera {H36M_P2_CAMERA}"),
            ):
                h36m[name] = {
                    "selection": desc,
                    **{p: summarize_h36m(values, masks[name], p) for p in ("model", "baseline")},
                }
        report["h36m"] = h36m
    return report


# ------------------------------------------------------------------------------------------ runner


def _to_host(x) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def default_output_path(workdir: str, split: str, step: int) -> str:
    return os.path.join(os.path.abspath(workdir), "eval", f"{split or 'all'}_step{step}.json")


def evaluate(
    workdir: str,
    split: str = "validation",
    checkpoint: str | int = "best",
    h36m_regressor: str | None = None,
    batch_size: int | None = None,
    out_path: str | None = None,
    progress: bool = True,
    flip_test: bool | None = None,
) -> dict[str, Any]:
    """Evaluate the run in `workdir` on `split` ('validation', 'train', or 'all' / '' = whole file).

    flip_test: predict with the flip test (`trainer.make_inference`); None = the run's config
    eval.flip_test (False for runs without the key).

    Returns the report (also written as JSON to `out_path`, default
    `default_output_path(workdir, split, step)`, on process 0; the path is in report['output']).
    """
    from hmr_jax import trainer  # pylint: disable=g-import-not-at-top

    t0 = time.time()
    workdir = os.path.abspath(workdir)
    config = load_run_config(workdir)
    split = "" if split in ("all", "") else split
    checkpoint = parse_checkpoint(checkpoint) if not isinstance(checkpoint, int) else checkpoint
    if batch_size is not None:
        config.data.eval_batch_size = int(batch_size)
    n_dev = jax.device_count()
    bs = config.data.eval_batch_size
    if bs < 1 or bs % n_dev or bs % jax.process_count():
        raise ValueError(f"--batch-size: expected a positive multiple of the {n_dev} devices, found {bs}")
    h36m_path = h36m_regressor or next(
        (config_value(config, k) for k in H36M_REGRESSOR_KEYS if config_value(config, k)), ""
    )

    mesh = trainer.make_mesh()
    with jax.set_mesh(mesh):
        paths = trainer.resolve_data_paths(config, workdir)
        source = trainer.make_source(config, split, paths)
        iterator = trainer.make_input(config, source, train=False)
        joint_set = iterator.joint_set
        regressors = dict(trainer.load_regressors(config, joint_set) or {})
        if h36m_path:
            regressors[H36M_REGRESSOR_NAME] = load_h36m_regressor(h36m_path)
        smpl_host = smpl.load(body_model_path(config))
        smpl_model = trainer.replicate(smpl_host, mesh)
        regressors = trainer.replicate(regressors, mesh) if regressors else None

        models = trainer.make_models(config)
        state, _, step, note = restore_checkpoint(workdir, config, models, mesh, checkpoint)
        baseline = regressor_start(config)
        baselines = {"baseline": trainer.replicate({k: baseline[k] for k in ("pose_rotmat", "betas")}, mesh)}
        train_mean = _training_mean(config, paths)
        if train_mean is not None:
            baselines["train_mean"] = trainer.replicate(train_mean, mesh)
        flip_test = trainer.flip_test_enabled(config) if flip_test is None else bool(flip_test)
        eval_step = jax.jit(make_sample_eval_step(models, joint_set, flip_test))

        chunks: list[dict[str, np.ndarray]] = []
        indices: list[np.ndarray] = []
        bar = _progress(progress and jax.process_index() == 0, iterator.num_batches, "eval")
        for batch in iterator:
            arrays = {k: np.asarray(batch[k], np.float32) for k in _BATCH_KEYS}
            arrays = trainer.to_global(arrays, mesh)
            out = eval_step(state, arrays, smpl_model, baselines, regressors)
            chunks.append({k: _to_host(v) for k, v in out.items()})
            indices.append(_to_host(trainer.to_global({"index": np.asarray(batch["index"], np.int32)}, mesh)["index"]))
            bar.update(1)
        bar.close()
    if not chunks:
        raise ValueError(f"split {split or 'all'!r} of {paths[1]!r}: no samples to evaluate")
    values = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    index = np.concatenate(indices)
    info = sample_info(config, split, paths)
    report = {
        "workdir": workdir,
        "split": split or "all",
        "checkpoint": {"requested": str(checkpoint), "step": step, "loaded": note},
        "annotations": paths[1] if config_value(config, "data.source", "folder") == "folder" else paths[0],
        "joint_set": joint_set,
        "flip_test": flip_test,
        "body_model": body_model_path(config),
        "h36m_regressor": h36m_path or None,
        "units": UNITS,
        "mean_params": {
            "pose_rotmat": np.asarray(baseline["pose_rotmat"]).tolist(),
            "betas": np.asarray(baseline["betas"]).tolist(),
            "cam": np.asarray(baseline["cam"]).tolist(),
        },
        "skipped_samples": {int(k): v for k, v in iterator.invalid.items()},
        **build_report(values, index, info, bool(h36m_path)),
        "seconds": round(time.time() - t0, 2),
    }
    stats = getattr(iterator, "epoch_stats", [])
    runtime_skips = sum(s.skipped for s in stats)
    if runtime_skips:
        report["runtime_skipped_samples"] = runtime_skips
    out_path = out_path or default_output_path(workdir, split, step)
    report["output"] = out_path
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(report, f, indent=2, default=_json_default)  # NaN stays NaN (a diverged model)
            f.write("\n")
    return report


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _progress(enabled: bool, total: int | None, desc: str):
    import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm.tqdm(total=total, disable=not enabled, unit="batch", desc=desc, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------ table


def _fmt(v, kind):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if kind == "v2v_l2":
        return f"{v:.5f}"
    if kind == "pose_outside_limits":
        return f"{100.0 * v:.1f}%"
    return f"{v:.1f}"


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table."""
    head = f"{'':28s} {'N':>6s} {'MPJPE':>8s} {'PA-MPJPE':>9s} {'PVE':>8s} {'v2v L2':>9s} {'outside':>8s}"
    units = f"{'':28s} {'':>6s} {'mm':>8s} {'mm':>9s} {'mm':>8s} {'m^2':>9s} {'limits':>8s}"

    def row(name, s):
        return (
            f"{name[:28]:28s} {s['count']['valid']:>6d} {_fmt(s['mpjpe'], 'mpjpe'):>8s} "
            f"{_fmt(s['pa_mpjpe'], 'pa_mpjpe'):>9s} {_fmt(s['pve'], 'pve'):>8s} "
            f"{_fmt(s['v2v_l2'], 'v2v_l2'):>9s} {_fmt(s['pose_outside_limits'], 'pose_outside_limits'):>8s}"
        )

    ck = report["checkpoint"]
    lines = [
        f"{report['workdir']}: split '{report['split']}', checkpoint step {ck['step']} ({ck['loaded']}), "
        f"joint set {report['joint_set']}" + (", flip test" if report.get("flip_test") else ""),
        head,
        units,
        row("model", report["model"]),
        row("mean-pose baseline", report["baseline"]),
    ]
    if report.get("train_mean_baseline"):
        lines.append(row("training-set mean pose/shape", report["train_mean_baseline"]))
    gt = report.get("ground_truth_pose_outside_limits")
    if gt is not None:
        lines.append(f"(ground-truth poses outside limits: {100.0 * gt:.1f}%)")
    if report.get("per_action"):
        lines += ["", "per action (model):", head]
        lines += [row(a, s["model"]) for a, s in report["per_action"].items()]
    if report.get("h36m"):
        h = report["h36m"]
        lines += [
            "",
            f"Human3.6M ({h['joints']}; regressor {report['h36m_regressor']})",
            f"{'':28s} {'N':>6s} {'MPJPE':>8s} {'PA-MPJPE':>9s}   baseline MPJPE / PA-MPJPE",
        ]
        if "note" in h:
            lines.append(f"note: {h['note']}")
        for key, label in (("p1", "Protocol 1"), ("p2", "Protocol 2"), ("all", "all samples")):
            if key in h:
                m, b = h[key]["model"], h[key]["baseline"]
                lines.append(
                    f"{label:28s} {m['count']:>6d} {_fmt(m['mpjpe'], 'mpjpe'):>8s} "
                    f"{_fmt(m['pa_mpjpe'], 'mpjpe'):>9s}   {_fmt(b['mpjpe'], 'mpjpe')} / "
                    f"{_fmt(b['pa_mpjpe'], 'mpjpe')}"
                )
    lines.append(f"written: {report['output']}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- CLI


def quiet_logs() -> None:
    """absl INFO logs (orbax prints several lines per restore) off unless --verbosity was given."""
    from absl import flags  # pylint: disable=g-import-not-at-top
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def main(argv):
    from absl import app  # pylint: disable=g-import-not-at-top

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    quiet_logs()
    try:
        report = evaluate(
            _WORKDIR.value,
            split=_SPLIT.value,
            checkpoint=_CHECKPOINT.value,
            h36m_regressor=_H36M.value,
            batch_size=_BATCH.value,
            out_path=_OUT.value,
            flip_test=_FLIP.value,
        )
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0:
        print(format_table(report))


if __name__ == "__main__":
    from hmr_jax import hugepages  # pylint: disable=g-import-not-at-top

    hugepages.ensure()  # XLA:CPU's per-call buffers on huge pages (see hmr_jax.hugepages)
    from absl import app, flags  # pylint: disable=g-import-not-at-top

    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by hmr_jax.train.", required=True)
    _SPLIT = flags.DEFINE_string("split", "validation", "'validation', 'train' or 'all' (the whole file).")
    _CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
    _H36M = flags.DEFINE_string(
        "h36m-regressor",
        None,
        "(17, V) Human3.6M joint regressor (.npy/.npz): adds the "
        "H36M Protocol 1/2 metrics (default: config eval.h36m_regressor, if any).",
    )
    _BATCH = flags.DEFINE_integer("batch-size", None, "Global eval batch (default: config data.eval_batch_size).")
    _OUT = flags.DEFINE_string("out", None, "JSON output path (default: DIR/eval/<split>_step<step>.json).")
    _FLIP = flags.DEFINE_boolean(
        "flip_test",
        None,
        "Average each prediction with the mirrored prediction for the "
        "mirror image (default: config eval.flip_test; --noflip_test turns it off).",
    )
    app.run(main)

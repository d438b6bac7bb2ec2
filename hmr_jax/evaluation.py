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
for folder datasets, the training split's mean pose and shape (`mean_params.training_mean`, the
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

import copy
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from hmr_jax import config_checks, mean_params, sharding, smpl, steps
from hmr_jax import state as state_lib
from hmr_jax import workdir as workdir_lib
from hmr_jax.data import annotations as ann_lib
from hmr_jax.data import setup as data_setup

METRICS = ("mpjpe", "pa_mpjpe", "pve", "v2v_l2", "pose_outside_limits")
H36M_METRICS = ("mpjpe", "pa_mpjpe")
UNITS = {"mpjpe": "mm", "pa_mpjpe": "mm", "pve": "mm", "v2v_l2": "m^2", "pose_outside_limits": "share of 23 joints"}
H36M_P2_CAMERA = "60457274"
H36M_FRAME_STRIDE = 5
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}


def load_h36m_regressor(path: str) -> np.ndarray:
    """The (17, V) Human3.6M regressor; any failure raises ValueError naming the file."""
    try:
        return smpl.load_regressor(path, 17)
    except Exception as e:  # pylint: disable=broad-except  (EOFError, zip errors, ...)
        raise ValueError(
            f"--h36m-regressor {path!r}: expected a (17, V) joint regressor .npy/.npz, "
            f"could not load it: {type(e).__name__}: {e}"
        ) from e


# ---------------------------------------------------------------------------------- the eval step


# -------------------------------------------------------------------------------- sample metadata


def canonical_action(action: str) -> str:
    """'Directions_1' / 'Directions 1' -> 'Directions'; 'TakingPhoto' -> 'Photo'; 'WalkingDog' -> 'WalkDog'."""
    name = re.sub(r"[ _]\d+$", "", str(action))
    return _ACTION_ALIASES.get(name, name)


def split_annotations(config, split: str, paths: tuple[str, str, str]) -> ann_lib.Annotations | None:
    """The annotation rows of the split, in the order of the pipeline's 'index' (folder sources;
    None for TFDS)."""
    if config.data.source != "folder":
        return None
    ann = ann_lib.load(paths[1])
    if not split:
        return ann
    return ann.select(ann_lib.split_indices(ann, split, val_fraction=config.data.val_fraction))


def sample_info(ann: ann_lib.Annotations | None) -> list[dict] | None:
    """Per sample of `split_annotations`: imgname and, when known, H36M subject, action, camera,
    frame (from the name, else the annotation's fields). None for TFDS sources."""
    if ann is None:
        return None
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


def gender_codes(ann: ann_lib.Annotations | None, path: str) -> np.ndarray | None:
    """Per sample of `split_annotations`: 0 neutral, 1 male, 2 female (`steps.GENDER_CODES`), from
    the annotations' `gender` (file `path`); None when they have none (or TFDS)."""
    if ann is None or ann.gender is None:
        return None
    names = [str(g).strip().lower() for g in np.asarray(ann.gender)]
    unknown = sorted(set(names) - set(steps.GENDER_CODES))
    if unknown:
        raise ValueError(
            f"annotation file {path!r}: gender: expected one of {sorted(steps.GENDER_CODES)}, found {unknown[:5]}"
        )
    return np.asarray([steps.GENDER_CODES[n] for n in names], np.int64)


def h36m_protocol_masks(info: Sequence[Mapping[str, Any]] | None) -> dict[str, np.ndarray] | None:
    """Boolean masks over the split's samples for Protocol 1 ('p1') and 2 ('p2'), or None when the
    samples lack subject, camera or frame (see the module docstring for the frame rule)."""
    if not info or not all(all(k in r for k in ("subject", "camera", "frame")) for r in info):
        return None
    first: dict[tuple, int] = {}
    for r in info:
        key = (r["subject"], r.get("action"), r["camera"])
        first[key] = min(first.get(key, r["frame"]), r["frame"])
    subject = np.array([r["subject"] in ann_lib.H36M_VAL_SUBJECTS for r in info])
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
        mask = (values[f"mask/{steps.METRIC_MASK[metric]}"] > 0) & select
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


def default_output_path(workdir: str, split: str, step: int) -> str:
    return os.path.join(os.path.abspath(workdir), "eval", f"{split or 'all'}_step{step}.json")


def check_output_file(path: str, what: str = "--out") -> None:
    """Raise ValueError (one line naming `what` and the path) unless `path` can be written: not a
    folder, its folder creatable and writable."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r}: expected a file path, found a folder")
    folder = os.path.dirname(path)
    if os.path.isfile(folder):
        raise ValueError(f"{what} {path!r}: cannot create its folder under {folder!r}, which is a file")
    workdir_lib.ensure_writable_folder(folder, f"{what} {path!r}")


def override_data(config: ml_collections.ConfigDict, data: Mapping[str, str]) -> ml_collections.ConfigDict:
    """A copy of `config` with `data.<key>` set from strings (typed as the run's own value), then
    checked (`validate_config`); an unknown key or a bad value is a ConfigError naming it. Relative
    annotation / image paths are taken inside the given data.dir, as in training."""
    config = copy.deepcopy(config)
    for key, text in data.items():
        if key not in config.data or isinstance(config.data[key], ml_collections.ConfigDict):
            known = sorted(k for k, v in config.data.items() if not isinstance(v, ml_collections.ConfigDict))
            raise config_checks.ConfigError(f"--data {key}={text}: no data.{key} in the config; one of {known}")
        old = config.data[key]
        try:
            config.data[key] = type(old)(text) if not isinstance(old, bool) else text.lower() in ("1", "true", "yes")
        except ValueError:
            raise config_checks.ConfigError(
                f"--data {key}={text}: expected a {type(old).__name__} like the run's {old!r}"
            ) from None
    if "dir" in data:
        config.data.synthetic.num = 0  # the given folder, never a generated set
    config_checks.validate_config(config, stage="evaluate")
    return config


def evaluate(
    workdir: str,
    split: str = "validation",
    checkpoint: str | int = "best",
    h36m_regressor: str | None = None,
    batch_size: int | None = None,
    out_path: str | None = None,
    progress: bool = True,
    flip_test: bool | None = None,
    data: Mapping[str, str] | None = None,
    body_model_male: str | None = None,
    body_model_female: str | None = None,
) -> dict[str, Any]:
    """Evaluate the run in `workdir` on `split` ('validation', 'train', or 'all' / '' = whole file).

    data: `data.*` config values to evaluate on other data than the run trained on ({'dir': ...,
    'annotations': ..., 'image_root': ..., 'source': ..., 'joint_regressor': ...}; see
    `override_data`), e.g. SPIN's h36m_valid_protocol2.npz; checked like the run's own values.

    body_model_male / body_model_female: SMPL files for the ground truth of samples whose annotation
    names a gender (SPIN's 3dpw_test.npz: `gender` 'm' / 'f'), as that data set's ground truth
    was made; without them the run's body model serves every sample (the report says so).

    flip_test: predict with the flip test (`trainer.make_inference`); None = the run's config
    eval.flip_test (False for runs without the key).

    Returns the report (also written as JSON to `out_path`, default
    `default_output_path(workdir, split, step)`, on process 0; the path is in report['output']).
    Before anything loads, the run's config.json is checked (`config_checks.check_run_config`:
    ConfigError naming the key and the file; values edited since training are logged and listed
    in report['config_edits']) and the output path tested for writing (ValueError).
    """
    t0 = time.time()
    workdir = os.path.abspath(workdir)
    config = workdir_lib.load_run_config(workdir)
    edits = config_checks.check_run_config(config, workdir, "evaluate")
    if edits:
        logging.warning("%s/config.json differs from the config.py training wrote: %s", workdir, "; ".join(edits))
    if data:
        config = override_data(config, data)
    if jax.process_index() == 0:  # before the model loads: a bad --out fails in seconds
        check_output_file(out_path or default_output_path(workdir, split, 0), "--out" if out_path else "eval folder")
    split = "" if split in ("all", "") else split
    checkpoint = workdir_lib.parse_checkpoint(checkpoint) if not isinstance(checkpoint, int) else checkpoint
    if batch_size is not None:
        config.data.eval_batch_size = int(batch_size)
    n_dev = jax.device_count()
    bs = config.data.eval_batch_size
    if bs < 1 or bs % n_dev or bs % jax.process_count():
        raise ValueError(f"--batch-size: expected a positive multiple of the {n_dev} devices, found {bs}")
    h36m_path = h36m_regressor or config.eval.h36m_regressor

    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        paths = data_setup.resolve_data_paths(config, workdir)
        source = data_setup.make_source(config, split, paths)
        iterator = data_setup.make_input(config, source, train=False)
        joint_set = iterator.joint_set
        regressors = dict(data_setup.load_regressors(config, joint_set) or {})
        if h36m_path:
            regressors[steps.H36M_REGRESSOR_NAME] = load_h36m_regressor(h36m_path)
        smpl_host = smpl.load(workdir_lib.body_model_path(config))
        smpl_model = sharding.replicate(smpl_host, mesh)
        regressors = sharding.replicate(regressors, mesh) if regressors else None

        models = state_lib.make_static_parts(config)
        state, _, step, note = workdir_lib.restore_checkpoint(workdir, config, models, mesh, checkpoint)
        baseline = mean_params.regressor_start(config)
        baselines = {"baseline": sharding.replicate({k: baseline[k] for k in ("pose_rotmat", "betas")}, mesh)}
        train_mean = mean_params.training_mean(config, paths)
        if train_mean is not None:
            baselines["train_mean"] = sharding.replicate(train_mean, mesh)
        flip_test = steps.flip_test_enabled(config) if flip_test is None else bool(flip_test)
        eval_step = jax.jit(steps.make_sample_eval_step(models, joint_set, flip_test))
        split_ann = split_annotations(config, split, paths)  # read once: genders, names, actions
        genders = gender_codes(split_ann, paths[1])
        gendered, gender_note = None, None
        if genders is not None and (body_model_male or body_model_female):
            if not (body_model_male and body_model_female):
                raise ValueError("--body-model-male / --body-model-female: give both (the file names genders)")
            gendered = sharding.replicate(
                {"male": smpl.load(body_model_male), "female": smpl.load(body_model_female)}, mesh
            )
        elif genders is not None and np.any(genders > 0):
            gender_note = (
                "the annotations name each sample's gender, but no --body-model-male / --body-model-female "
                "was given: the run's body model made every ground-truth mesh"
            )
            logging.warning("%s", gender_note)

        chunks: list[dict[str, np.ndarray]] = []
        indices: list[np.ndarray] = []
        bar = _progress(progress and jax.process_index() == 0, iterator.num_batches, "eval")
        for batch in iterator:
            arrays = data_setup.step_arrays(batch)
            if gendered is not None:
                arrays["gender"] = genders[np.asarray(batch["index"])].astype(np.float32)
            arrays = sharding.to_global(arrays, mesh)
            out = eval_step(state, arrays, smpl_model, baselines, regressors, gendered)
            chunks.append({k: sharding.gather(v) for k, v in out.items()})
            indices.append(
                sharding.gather(sharding.to_global({"index": np.asarray(batch["index"], np.int32)}, mesh)["index"])
            )
            bar.update(1)
        bar.close()
    if not chunks:
        raise ValueError(f"split {split or 'all'!r} of {paths[1]!r}: no samples to evaluate")
    values = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    index = np.concatenate(indices)
    info = sample_info(split_ann)
    report = {
        "workdir": workdir,
        "split": split or "all",
        "checkpoint": {"requested": str(checkpoint), "step": step, "loaded": note},
        "annotations": paths[1] if config.data.source == "folder" else paths[0],
        "joint_set": joint_set,
        "flip_test": flip_test,
        "body_model": workdir_lib.body_model_path(config),
        "ground_truth_body_models": (
            {"male": body_model_male, "female": body_model_female} if gendered is not None else gender_note
        ),
        "h36m_regressor": h36m_path or None,
        "units": UNITS,
        "mean_params": {
            "pose_rotmat": np.asarray(baseline["pose_rotmat"]).tolist(),
            "betas": np.asarray(baseline["betas"]).tolist(),
            "cam": np.asarray(baseline["cam"]).tolist(),
        },
        "skipped_samples": {int(k): v for k, v in iterator.invalid.items()},
        **({"config_edits": edits} if edits else {}),
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

"""The pure, jit-compiled functions of a run: the training step, the per-sample evaluation shared by
validation and `hmr_jax.evaluate`, and inference."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hmr_jax import config_checks, fitting, geometry, losses, skeleton, smpl
from hmr_jax import metrics as metrics_lib
from hmr_jax.fitting import in_loop
from hmr_jax.models import hmr as hmr_lib
from hmr_jax.optim import set_learning_rate
from hmr_jax.state import StaticParts, TrainState, keypoint_head_kwargs

PyTree = Any
Batch = Mapping[str, Any]

GENDER_CODES = {"n": 0, "neutral": 0, "m": 1, "male": 1, "f": 2, "female": 2}  # batch['gender']
H36M_REGRESSOR_NAME = "h36m17"  # the regressor of the Human3.6M protocols, in `regressors`
# The mask each per-sample metric is averaged under ('mask/<name>' of `make_sample_eval_step`).
METRIC_MASK = {"mpjpe": "joints", "pa_mpjpe": "joints", "pve": "smpl", "v2v_l2": "smpl", "pose_outside_limits": "valid"}


def _tree_where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _masked_disc_real_loss(d_real, mask):
    """Eq. (8)'s real term, sum_i mean_b (D_i - 1)^2, as a masked mean over the real samples."""
    if mask is None:
        return jnp.sum(jnp.mean((d_real - 1.0) ** 2, axis=0))
    return losses.masked_mean(jnp.sum((d_real - 1.0) ** 2, axis=-1), mask)


def make_train_step(config: ml_collections.ConfigDict, parts: StaticParts, joint_set: str) -> Callable:
    """The pure training step `(state, batch, smpl_model, prior, regressors) -> (state, metrics)`.

    `prior` is None (real samples for the discriminators = the batch's ground truth where
    has_smpl) or {'pose': (N, 72), 'shape': (N, 10)} sampled inside the step.
    """
    weights = {k: float(v) for k, v in config.loss_weights.items()}
    adversarial = weights["adversarial"] > 0 or config.adversarial.disc_loss_weight > 0
    disc_weight = float(config.adversarial.disc_loss_weight)
    img_size = config.data.img_size
    skip_nonfinite = config.train.nan_policy == "skip"
    head = keypoint_head_kwargs(config) is not None
    lift = head and weights["lift"] > 0
    lift_sigma = 2.0 * float(config.train.lift_noise_px) / img_size  # px -> normalised units
    heatmap_sigma = float(config.train.heatmap_sigma_px)
    fit_in_loop = bool(config.train.fit_in_loop)
    fit_config = fitting.from_config(config.fitting) if fit_in_loop else None
    fit_threshold = float(config.train.fit_threshold)
    focal = focal_length(config)

    def train_step(
        state: TrainState,
        batch: Batch,
        smpl_model: smpl.SMPLModel,
        prior: Mapping[str, jax.Array] | None = None,
        regressors: Mapping[str, jax.Array] | None = None,
        fit_parts: Mapping[str, Any] | None = None,
    ) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        k_dropout, k_prior = jax.random.split(key)
        k_lift = jax.random.fold_in(key, 1)
        has_smpl = batch["has_smpl"]  # (B,)
        gt_rotmat = losses.pose_to_rotmat(batch["pose"])  # (B, 24, 3, 3)
        if fit_in_loop:  # the targets come from the fits, inside gen_loss
            ground_truth = None
        else:
            gt_vertices = smpl.forward(smpl_model, batch["shape"], gt_rotmat).vertices  # (B, V, 3)
            ground_truth = {"rotmat": gt_rotmat, "betas": batch["shape"], "vertices": gt_vertices, "has": has_smpl}

        def fitted_targets(out):
            """SPIN: refit from the regressor's estimate (no gradient), keep the better fit; the
            SMPL targets are the ground truth where has_smpl, else a fit below the threshold."""
            pred = jax.lax.stop_gradient(
                (geometry.matrix_to_axis_angle(out["pose_rotmat"]).reshape(-1, 72), out["betas"], out["cam"])
            )
            r = in_loop.refit(
                state.fits,
                batch["index"],
                batch["rot"],
                batch["flip"],
                batch.get("mask", jnp.ones_like(has_smpl)),
                batch["keypoints_2d"],
                pred[0],
                pred[1],
                geometry.weak_perspective_to_translation(pred[2], focal, img_size),
                fit_parts["body"],
                fit_parts["prior"],
                focal,
                img_size,
                fit_config,
            )
            use_fit = (1.0 - has_smpl) * (r.loss < fit_threshold)
            rotmat = jnp.where(has_smpl[:, None, None, None] > 0, gt_rotmat, losses.pose_to_rotmat(r.pose))
            betas = jnp.where(has_smpl[:, None] > 0, batch["shape"], r.betas)
            vertices = smpl.forward(smpl_model, betas, rotmat).vertices
            target = {"rotmat": rotmat, "betas": betas, "vertices": vertices, "has": jnp.maximum(has_smpl, use_fit)}
            report = {
                "fit/updated": jnp.mean(r.updated),
                "fit/used": jnp.mean(use_fit),
                "fit/error_px": jnp.mean(r.error_px),
            }
            return jax.lax.stop_gradient(target), r.table, report

        scale = state.plateau.scale
        gen_lr = parts.gen_lr(state.step, state.num_steps) * scale
        disc_lr = parts.disc_lr(state.step, state.num_steps) * scale

        def terms_3d(estimates, target):
            """The 3D-supervised terms of each estimate {pose_rotmat, betas} -> [(terms, model joints)].
            One SMPL forward for all of them (stacked on the batch axis): the pose blend shapes' matmul
            streams its (207, 3V) weights once instead of once per estimate."""
            n = len(estimates)
            cat = lambda k: jnp.concatenate([e[k] for e in estimates], axis=0)  # noqa: E731
            body = smpl.forward(smpl_model, cat("betas"), cat("pose_rotmat"))  # (nB, V, 3), (nB, 24, 3)
            vertices = jnp.split(body.vertices, n)
            pred_joints = jnp.split(smpl.model_joints(joint_set, body.joints, body.vertices, regressors), n)
            return [
                (
                    {
                        "vertex_l2": losses.vertex_l2_loss(v, target["vertices"], target["has"]),
                        "vertex_l1": losses.vertex_l1_loss(v, target["vertices"], target["has"]),
                        "beta": losses.beta_l2_loss(e["betas"], target["betas"], target["has"]),
                        "pose": losses.pose_l2_loss(e["pose_rotmat"], target["rotmat"], target["has"]),
                        "joints_3d": losses.joints_3d_l2_loss(j, batch["joints_3d"], batch["has_joints_3d"], joint_set),
                        "joints_3d_pa": losses.joints_3d_pa_loss(j, batch["joints_3d"], batch["has_joints_3d"]),
                    },
                    j,
                )
                for e, v, j in zip(estimates, vertices, pred_joints)
            ]

        def gen_loss(params):
            lift_keypoints = None
            if lift:  # GT 2D keypoints + noise, with their visibility (invisible: the head's own)
                gt_2d = losses.normalize_keypoints(batch["keypoints_2d"][..., :2], img_size)  # (B, J, 2)
                noisy = gt_2d + lift_sigma * jax.random.normal(k_lift, gt_2d.shape, gt_2d.dtype)
                lift_keypoints = jnp.concatenate([noisy, batch["keypoints_2d"][..., 2:]], axis=-1)  # (B, J, 3)
            out, new_stats = hmr_lib.apply_generator(
                parts.gen,
                params,
                state.gen_batch_stats,
                batch["image"],
                k_dropout,
                train=True,
                lift_keypoints=lift_keypoints,
            )
            if fit_in_loop:
                target, fits, fit_report = fitted_targets(out)
            else:
                target, fits, fit_report = ground_truth, state.fits, {}
            per_estimate = terms_3d([out, out["lift"]] if lift else [out], target)
            terms, pred_joints = per_estimate[0]
            terms["joints_2d"] = losses.joints_2d_l1_loss(pred_joints, out["cam"], batch["keypoints_2d"], img_size)
            zero = jnp.zeros((), jnp.float32)  # terms of parts the config leaves out
            terms["keypoints_2d"] = (
                losses.keypoints_l1_loss(out["keypoints_2d"], batch["keypoints_2d"], img_size) if head else zero
            )
            terms["keypoint_heatmap"] = (
                losses.keypoint_heatmap_loss(out["keypoint_logits"], batch["keypoints_2d"], img_size, heatmap_sigma)
                if head and weights["keypoint_heatmap"] > 0
                else zero
            )
            terms["lift"] = zero
            if lift:
                lift_terms = per_estimate[1][0]
                terms["lift"] = sum(weights[k] * lift_terms[k] for k in losses.LIFT_TERMS)
            its = out["iterations"]
            n_it, b = its["betas"].shape[:2]
            fake_rotmat = its["pose_rotmat"].reshape((n_it * b, 24, 3, 3))  # every iteration, as HMR
            fake_betas = its["betas"].reshape((n_it * b, -1))
            if adversarial:
                d_fake = hmr_lib.apply_discriminator(parts.disc, state.disc_params, fake_rotmat[:, 1:], fake_betas)
                terms["adversarial"] = losses.adversarial_generator_loss(d_fake)
            else:
                terms["adversarial"] = zero
            total, report = losses.total_generator_loss(terms, weights)
            return total, (report, new_stats, fake_rotmat, fake_betas, fits, fit_report)

        (total, (report, new_stats, fake_rotmat, fake_betas, fits, fit_report)), grads = jax.value_and_grad(
            gen_loss, has_aux=True
        )(state.gen_params)
        updates, gen_opt_state = parts.gen_tx.update(
            grads, set_learning_rate(state.gen_opt_state, gen_lr), state.gen_params
        )
        gen_params = optax.apply_updates(state.gen_params, updates)
        metrics = {f"loss/{k}": v for k, v in report.items()} | fit_report
        metrics["grad_norm/gen"] = optax.tree.norm(grads)
        finite = jnp.isfinite(total) & jnp.isfinite(metrics["grad_norm/gen"])

        disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
        if adversarial:
            if prior is not None:
                idx = jax.random.randint(k_prior, (batch["pose"].shape[0],), 0, prior["pose"].shape[0])
                real_rotmat = losses.pose_to_rotmat(prior["pose"][idx])
                real_betas, real_mask = prior["shape"][idx], None
            else:
                real_rotmat, real_betas, real_mask = gt_rotmat, batch["shape"], has_smpl
            fake_rotmat = jax.lax.stop_gradient(fake_rotmat)
            fake_betas = jax.lax.stop_gradient(fake_betas)

            def disc_loss(params):
                d_real = hmr_lib.apply_discriminator(parts.disc, params, real_rotmat[:, 1:], real_betas)
                d_fake = hmr_lib.apply_discriminator(parts.disc, params, fake_rotmat[:, 1:], fake_betas)
                loss = _masked_disc_real_loss(d_real, real_mask) + jnp.sum(jnp.mean(d_fake**2, axis=0))
                return disc_weight * loss, (loss, d_real, d_fake)

            (_, (d_loss, d_real, d_fake)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(disc_params)
            d_updates, disc_opt_state = parts.disc_tx.update(
                d_grads, set_learning_rate(disc_opt_state, disc_lr), disc_params
            )
            disc_params = optax.apply_updates(disc_params, d_updates)
            metrics["loss/disc"] = d_loss
            metrics["grad_norm/disc"] = optax.tree.norm(d_grads)
            metrics["disc/real_mean"] = losses.masked_mean(jnp.mean(d_real, axis=-1), real_mask)
            metrics["disc/fake_mean"] = jnp.mean(d_fake)
            finite = finite & jnp.isfinite(d_loss) & jnp.isfinite(metrics["grad_norm/disc"])

        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            gen_params=gen_params,
            gen_batch_stats=new_stats,
            gen_opt_state=gen_opt_state,
            disc_params=disc_params,
            disc_opt_state=disc_opt_state,
            fits=fits,
        )
        if skip_nonfinite:  # keep the old values where anything is NaN/inf; stays compiled
            kept = _tree_where(finite, new_state, state)
            new_state = dataclasses.replace(kept, step=state.step + 1)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        metrics["param_norm/gen"] = optax.tree.norm(new_state.gen_params)
        metrics["param_norm/disc"] = optax.tree.norm(new_state.disc_params)
        metrics["lr/gen"] = gen_lr
        metrics["lr/disc"] = disc_lr
        return new_state, metrics

    return train_step


def flip_test_enabled(config: ml_collections.ConfigDict) -> bool:
    """config eval.flip_test: predict with the flip test."""
    return bool(config.eval.flip_test)


def make_inference(parts: StaticParts, *, flip_test: bool, joint_set: str | None) -> Callable:
    """`(state, images) -> {pose_rotmat, betas, cam[, keypoints_2d]}`: the eval-mode generator, or
    (flip_test, config eval.flip_test) its flip test (`hmr.apply_generator_flip_test`; the head's
    keypoints are swapped with `joint_set`'s flip permutation, or left as the crop's own when
    joint_set is None)."""
    if flip_test:
        perm = skeleton.get_joint_set(joint_set).flip_perm if joint_set else None
        return lambda state, images: hmr_lib.apply_generator_flip_test(
            parts.gen, state.gen_params, state.gen_batch_stats, images, perm
        )
    return lambda state, images: hmr_lib.apply_generator(
        parts.gen, state.gen_params, state.gen_batch_stats, images, None, train=False
    )[0]


def make_eval_step(config: ml_collections.ConfigDict, parts: StaticParts, joint_set: str) -> Callable:
    """Training's validation step: `(state, batch, smpl_model, regressors, baseline) -> per-batch sums`
    of `make_sample_eval_step`'s values ({metric: sum over the samples that count, 'count/<mask>': n};
    the same under 'mean_baseline/' for the constant `baseline` prediction when given). Add the sums
    over batches, then `finalize_eval`."""
    sample_step = make_sample_eval_step(parts, joint_set, flip_test_enabled(config))

    def eval_step(
        state: TrainState,
        batch: Batch,
        smpl_model: smpl.SMPLModel,
        regressors: Mapping[str, jax.Array] | None = None,
        baseline: Mapping[str, jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        baselines = {} if baseline is None else {"mean_baseline": baseline}
        values = sample_step(state, batch, smpl_model, baselines, regressors)
        sums = {}
        for name in ("model", *baselines):
            prefix = "" if name == "model" else f"{name}/"
            for k in config_checks.EVAL_METRICS:
                mask = values[f"mask/{METRIC_MASK[k]}"]
                sums[prefix + k] = jnp.sum(jnp.where(mask > 0, values[f"{name}/{k}"], 0.0))
            for m in set(METRIC_MASK.values()):
                sums[f"{prefix}count/{m}"] = jnp.sum(values[f"mask/{m}"])
        return sums

    return eval_step


def finalize_eval(sums: Mapping[str, float]) -> dict[str, float]:
    """`make_eval_step`'s sums, added over batches -> means, as 'val/<metric>' (and
    'val/mean_baseline/<metric>' when the baseline was evaluated); NaN where no sample counts."""
    out = {}
    for prefix in ("", "mean_baseline/"):
        if prefix + "count/smpl" not in sums:
            continue
        for k in config_checks.EVAL_METRICS:
            n = float(sums[f"{prefix}count/{METRIC_MASK[k]}"])
            out[f"val/{prefix}{k}"] = float(sums[prefix + k]) / n if n > 0 else float("nan")
    return out


def focal_length(config) -> float:
    """Crop-pixel focal length of the weak-perspective -> perspective conversion (5000 at 224 px)."""
    return float(config.images.focal_length_224) * config.data.img_size / 224.0


def make_predict(config, parts: StaticParts):
    """(state, images (B,S,S,3), smpl_model) -> pose (B,72) axis-angle, betas, cam, translation,
    vertices (B,V,3) camera frame, and keypoints_2d (B,J,2) normalised when the model has a
    keypoint head. With config eval.flip_test the body is the flip test's average (the keypoints
    stay the crop's own: the joint set's left/right pairs are not known here). Pure; jit it."""

    focal, size = focal_length(config), config.data.img_size
    infer = make_inference(parts, flip_test=flip_test_enabled(config), joint_set=None)

    def predict(state, images, smpl_model):
        out = infer(state, images)
        b = images.shape[0]
        transl = geometry.weak_perspective_to_translation(out["cam"], focal, size)  # (B, 3)
        body = smpl.forward(smpl_model, out["betas"], out["pose_rotmat"], transl=transl)
        pose = geometry.matrix_to_axis_angle(out["pose_rotmat"]).reshape(b, -1)  # (B, 72)
        pred = {
            "pose": pose,
            "betas": out["betas"],
            "cam": out["cam"],
            "translation": transl,
            "vertices": body.vertices,
        }
        if "keypoints_2d" in out:  # the keypoint head's, [-1, 1] crop coordinates
            pred["keypoints_2d"] = out["keypoints_2d"]
        return pred

    return predict


def make_sample_eval_step(parts: StaticParts, joint_set: str, flip_test: bool = False) -> Callable:
    """Pure per-sample evaluation step (the model's prediction: `make_inference`, with
    `flip_test` the flip test's).

    `(state, batch, smpl_model, baselines, regressors) -> {name: (B,)}`; `baselines` maps names
    (e.g. 'baseline', 'train_mean') to constant predictions {'pose_rotmat' (24,3,3), 'betas' (10,)}.
    For `p` in 'model' and each baseline name: `p/mpjpe`, `p/pa_mpjpe`, `p/pve`, `p/v2v_l2`, `p/pose_outside_limits`
    (and `p/h36m_mpjpe`, `p/h36m_pa_mpjpe` when `regressors` holds 'h36m17'), `gt/pose_outside_limits`,
    and the masks `mask/valid`, `mask/joints`, `mask/smpl` (and `mask/h36m`) (1 = the value counts).
    Training's validation (`make_eval_step`) and `hmr_jax.evaluate` both use it.
    """

    infer = make_inference(parts, flip_test=flip_test, joint_set=joint_set)

    def step(state, batch, smpl_model, baselines, regressors=None, gendered=None):
        out = infer(state, batch["image"])
        b = batch["image"].shape[0]
        gt_body = _ground_truth_body(smpl_model, batch, gendered)
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
            pred_joints = smpl.model_joints(joint_set, body.joints, body.vertices, regressors)
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


def _ground_truth_body(smpl_model, batch, gendered) -> smpl.SMPLOutput:
    """The ground-truth body of each sample: the run's body model, or with `gendered`
    ({'male': SMPLModel, 'female': SMPLModel}) and batch['gender'] (0 neutral, 1 male, 2 female;
    `GENDER_CODES`) the sample's own (as 3DPW's ground truth is made)."""
    neutral = smpl.forward(smpl_model, batch["shape"], batch["pose"])
    if not gendered or "gender" not in batch:
        return neutral
    male = smpl.forward(gendered["male"], batch["shape"], batch["pose"])
    female = smpl.forward(gendered["female"], batch["shape"], batch["pose"])
    code = batch["gender"][:, None, None]  # (B, 1, 1)
    pick = lambda m, f, n: jnp.where(code == 1, m, jnp.where(code == 2, f, n))  # noqa: E731
    return smpl.SMPLOutput(
        vertices=pick(male.vertices, female.vertices, neutral.vertices),
        joints=pick(male.joints, female.joints, neutral.joints),
    )


def _pose_outside_aa(pose_aa):

    rot = geometry.axis_angle_to_matrix(pose_aa.reshape(pose_aa.shape[:-1] + (24, 3)))  # (B, 24, 3, 3)
    return metrics_lib.pose_outside_limits(rot)


def _h36m_joints(reg, vertices):
    return metrics_lib.h36m_protocol_joints(smpl.regress_joints(reg, vertices))  # (B, 14, 3)


def _h36m_ground_truth(joint_set, reg, gt_vertices, gt_joints, conf, has_joints_3d, m_smpl, valid):
    """GT 14 LSP joints for the H36M protocol -> (joints (B,14,3), weights (B,14), mask (B,)).

    spin24 datasets with 3D joints: the file's joints (SPIN's `J24_TO_J14`), weighted by their
    confidence; otherwise (or smpl24 datasets) the 14 joints regressed from the GT mesh.
    """
    from_mesh = _h36m_joints(reg, gt_vertices)  # (B, 14, 3)
    ones = jnp.ones(from_mesh.shape[:2], from_mesh.dtype)
    if joint_set != "spin24":
        return from_mesh, ones, m_smpl
    idx = jnp.asarray(skeleton.SPIN24_TO_J14)
    j14, c14 = gt_joints[:, idx], conf[:, idx]
    use_joints = (has_joints_3d * (jnp.sum(c14, axis=-1) > 0)) > 0  # (B,)
    gt = jnp.where(use_joints[:, None, None], j14, from_mesh)
    weights = jnp.where(use_joints[:, None], c14, ones)
    mask = jnp.where(use_joints, valid, m_smpl)
    return gt, weights, mask


def update_plateau(plateau_tx, state: TrainState, value: jax.Array) -> TrainState:
    """Feed one validation value to reduce-on-plateau (call after each evaluation)."""
    _, plateau = plateau_tx.update(jnp.zeros((), jnp.float32), state.plateau, value=value)
    return dataclasses.replace(state, plateau=plateau)

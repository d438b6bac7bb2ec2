"""Functional core of the trainer: train_step overfits, NaN skip, config checks, checkpoints."""

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hmr_jax import body_model, config_checks, mean_params, optim, sharding, smpl, steps, trainer
from hmr_jax import checkpoint as ckpt_lib
from hmr_jax import state as state_lib
from hmr_jax.data import setup as data_setup
from hmr_jax.data.synthetic.writer import GENERATOR_VERSION
from hmr_jax.models import regressor as regressor_lib


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixed_batch, make_dataset, tiny_config, train_parts):
    """Tiny config (nan_policy 'skip': one compiled step serves both tests), state, fixed batch."""
    data_dir = tmp_path_factory.mktemp("data")
    make_dataset(data_dir, num=8, img_size=32)
    config = tiny_config(
        data_dir, **{"train.nan_policy": "skip", "loss_weights.adversarial": 0.0, "adversarial.disc_loss_weight": 0.0}
    )
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        models, state, smpl_model, step = train_parts(config, mesh)
        yield dict(
            config=config,
            mesh=mesh,
            models=models,
            state=state,
            smpl=smpl_model,
            step=step,
            batch=fixed_batch(data_dir),
        )


def test_train_step_overfits_fixed_samples(setup):
    state, batch = setup["state"], sharding.to_global(setup["batch"], setup["mesh"])
    losses = []
    for _ in range(150):
        state, metrics = setup["step"](state, batch, setup["smpl"], None, None)
        losses.append(float(metrics["loss/total"]))
    assert int(state.step) == 150
    assert np.all(np.isfinite(losses))
    assert min(losses[-5:]) <= losses[0] / 10.0, (losses[0], losses[-5:])
    for key in ("loss/vertex_l2", "loss/pose", "grad_norm/gen", "param_norm/gen", "lr/gen", "skipped"):
        assert key in metrics


def test_nan_skip_keeps_state(setup):
    bad = dict(setup["batch"])
    bad["image"] = np.full_like(bad["image"], np.nan)
    state = setup["state"]
    before = jax.device_get(state.gen_params)
    new_state, metrics = setup["step"](state, sharding.to_global(bad, setup["mesh"]), setup["smpl"], None, None)
    assert float(metrics["skipped"]) == 1.0
    assert int(new_state.step) == int(state.step) + 1
    after = jax.device_get(new_state.gen_params)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert trainer.nonfinite_terms(jax.device_get(metrics))  # the NaN is reported, not hidden


def test_loss_body_keeps_every_kth_vertex_and_the_regressors_support(setup):
    config = setup["config"].copy_and_resolve_references()
    host = smpl.load(body_model.default_body_model_path())
    v = host.num_vertices
    reg = np.zeros((17, v + 24), np.float32)  # (J, V + 24): vertices then SMPL joints
    reg[0, 5], reg[1, 6], reg[1, 7], reg[2:, v + 3] = 1.0, 0.5, 0.5, 1.0
    config.train.vertex_loss_stride = 1  # the whole body, as given
    regs_in = {"h36m17": reg}
    body, regs = data_setup.loss_body(config, host, regs_in)
    assert body is host and regs is regs_in
    config.train.vertex_loss_stride = 4
    body, regs = data_setup.loss_body(config, host, {"h36m17": reg})
    idx = np.array(sorted(set(range(0, v, 4)) | {5, 6, 7}))
    assert body.num_vertices == len(idx) and regs["h36m17"].shape == (17, len(idx) + 24)
    rng = np.random.default_rng(0)
    pose, betas = rng.normal(0, 0.3, (2, 72)).astype(np.float32), rng.normal(0, 1, (2, 10)).astype(np.float32)
    full, sub = smpl.forward(host, betas, pose), smpl.forward(body, betas, pose)
    np.testing.assert_allclose(sub.vertices, np.asarray(full.vertices)[:, idx], atol=1e-6)
    np.testing.assert_allclose(
        smpl.model_joints("h36m17", sub.joints, sub.vertices, regs),
        smpl.model_joints("h36m17", full.joints, full.vertices, {"h36m17": reg}),
        atol=1e-6,
    )
    # The step on the subset: the same non-vertex terms, vertex terms as means over a quarter.
    batch = sharding.to_global(setup["batch"], setup["mesh"])
    _, m_full = setup["step"](setup["state"], batch, setup["smpl"], None, None)
    _, m_sub = setup["step"](setup["state"], batch, sharding.replicate(body, setup["mesh"]), None, None)
    for k in ("pose", "beta", "joints_3d", "joints_2d", "keypoints_2d"):
        np.testing.assert_allclose(m_sub[f"loss/{k}"], m_full[f"loss/{k}"], rtol=1e-5, atol=1e-7)
    for k in ("vertex_l1", "vertex_l2"):
        np.testing.assert_allclose(m_sub[f"loss/{k}"], m_full[f"loss/{k}"], rtol=0.1)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_weight_decay_as_torch_optimisers(name, tiny_config):
    """optim.*.weight_decay: decoupled for adamw, an L2 gradient term for adam and sgd, as
    torch.optim.AdamW / Adam / SGD take it (the reference)."""
    torch = pytest.importorskip("torch")
    cfg = tiny_config("/unused").optim.gen
    cfg.update(name=name, learning_rate=0.05, weight_decay=0.2, clip_norm=0.0, schedule="constant", warmup_steps=0)
    tx = optim.make_optimizer(cfg)
    rng = np.random.default_rng(0)
    p0, grads = rng.normal(size=6).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)

    def run(tx):
        params, opt_state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
        for g in grads:
            updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
            params = params + updates
        return np.asarray(params)

    tp = torch.nn.Parameter(torch.tensor(p0))
    kw = dict(lr=0.05, weight_decay=0.2)
    topt = (
        torch.optim.SGD([tp], momentum=cfg.momentum, **kw)
        if name == "sgd"
        else {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](
            [tp], betas=(cfg.b1, cfg.b2), eps=cfg.eps, **kw
        )
    )
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    decayed = run(tx)
    np.testing.assert_allclose(decayed, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    cfg.weight_decay = 0.0
    assert np.max(np.abs(decayed - run(optim.make_optimizer(cfg)))) > 1e-3  # the decay acts


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_lr_scale_scales_one_modules_updates(name, tiny_config):
    """optim.gen.lr_scale: a module's updates (weight decay included) are its factor times those of
    the unscaled optimiser, step after step; the other modules' are unchanged."""
    cfg = tiny_config("/unused").optim.gen
    cfg.update(name=name, learning_rate=0.05, weight_decay=0.2, clip_norm=0.0)
    cfg.lr_scale.regressor = 1.0  # (the tiny config's is 1/3)
    rng = np.random.default_rng(0)
    params = {m: {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)} for m in ("encoder", "regressor")}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(3)]

    def updates(tx):
        state, out = tx.init(params), []
        for g in grads:  # the same params each step: the updates are comparable step by step
            u, state = tx.update(g, state, params)
            out.append(u)
        return out

    plain = updates(optim.make_optimizer(cfg))
    cfg.lr_scale.regressor = 0.25
    scaled = updates(optim.make_optimizer(cfg))
    for u0, u1 in zip(plain, scaled):
        np.testing.assert_allclose(u1["regressor"]["w"], 0.25 * u0["regressor"]["w"], rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(u1["encoder"]["w"], u0["encoder"]["w"])
        assert np.abs(u0["regressor"]["w"]).max() > 1e-3


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("data.batch_size", 0, "data.batch_size"),
        ("optim.gen.name", "adamax", "optim.gen.name"),
        ("optim.disc.schedule", "linear", "optim.disc.schedule"),
        ("train.nan_policy", "ignore", "train.nan_policy"),
        ("model.depth", 19, "model.depth"),
        ("adversarial.prior_file", "/nonexistent/prior.npz", "adversarial.prior_file"),
        ("early_stopping.metric", "val/accuracy", "early_stopping.metric"),
        ("loss_weights.pose", -1.0, "loss_weights.pose"),
        ("data.augment.flip_prob", 2.0, "data.augment"),
        ("train.vertex_loss_stride", 0, "train.vertex_loss_stride"),
        ("optim.disc.weight_decay", -0.1, "optim.disc.weight_decay"),
        ("data.synthetic.render_size", 8, "data.synthetic.render_size"),
        ("data.cache_decoded_mb", -1.0, "data.cache_decoded_mb"),
        ("optim.gen.lr_scale.regressor", 0.0, "optim.gen.lr_scale.regressor"),
    ],
)
def test_invalid_config_fails_fast_naming_the_key(tmp_path, key, value, needle, tiny_config):
    config = tiny_config(tmp_path / "no_data", **{key: value})
    start = time.time()
    with pytest.raises(config_checks.ConfigError, match=needle.replace(".", r"\.")):
        trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    assert time.time() - start < 5.0
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_lr_scale_of_an_absent_keypoint_head_is_an_error(tmp_path, tiny_config):
    config = tiny_config(tmp_path / "no_data", **{"optim.gen.lr_scale.keypoint_head": 0.5})
    config.model.keypoint_head.enabled = False
    for name in ("keypoints_2d", "keypoint_heatmap", "lift"):
        config.loss_weights[name] = 0.0
    with pytest.raises(
        config_checks.ConfigError, match=r"optim\.gen\.lr_scale\.keypoint_head.*needs the keypoint head"
    ):
        config_checks.validate_config(config)


def test_lr_scale_of_an_unknown_module_is_an_error(tmp_path, tiny_config):
    config = tiny_config(tmp_path / "no_data")
    config.optim.gen.lr_scale.encoders = 2.0  # a typo would otherwise scale nothing
    with pytest.raises(config_checks.ConfigError, match=r"optim\.gen\.lr_scale\.encoders.*not a module"):
        config_checks.validate_config(config)


def test_flip_test_must_be_a_bool(tmp_path, tiny_config):
    config = tiny_config(tmp_path / "no_data")
    config.eval = ml_collections.ConfigDict(dict(flip_test="yes"))  # a config file's own group: any type
    with pytest.raises(config_checks.ConfigError, match=r"eval\.flip_test"):
        trainer.train_and_evaluate(config, str(tmp_path / "wd"))


@pytest.mark.parametrize("key", ["data.batch_size", "data.eval_batch_size"])
def test_batch_not_a_multiple_of_the_devices_names_the_key(tmp_path, key, tiny_config):
    # The check itself; the 8-device run is in test_distributed.py (a subprocess with 8 devices).
    config = tiny_config(tmp_path / "no_data", **{key: 12})
    config_checks.validate_config(config, num_devices=4)  # 12 = 3 x 4: fine
    with pytest.raises(config_checks.ConfigError, match=key.replace(".", r"\.") + ".*multiple of the 8 devices"):
        config_checks.validate_config(config, num_devices=8)


def test_missing_dataset_names_the_key(tmp_path, tiny_config):
    config = tiny_config(tmp_path / "no_data")
    with pytest.raises(config_checks.ConfigError, match=r"data\.annotations"):
        trainer.train_and_evaluate(config, str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()  # a refused run creates nothing


def _tree_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_refused_for_another_configs_checkpoint_leaves_the_workdir_as_it_was(tmp_path, tiny_data, tiny_config):
    data = tiny_data
    workdir = tmp_path / "wd"
    short = {"train.num_steps": 2, "train.eval_every": 0, "train.checkpoint_every": 0}
    trainer.train_and_evaluate(tiny_config(data, **short), str(workdir))
    before = _tree_bytes(workdir)
    assert {"config.json", "config.py"} <= {str(p) for p in before}
    wider = tiny_config(data, **{**short, "model.width": 16, "train.num_steps": 4})
    with pytest.raises(ckpt_lib.CheckpointMismatchError):
        trainer.train_and_evaluate(wider, str(workdir))
    assert _tree_bytes(workdir) == before


def test_checkpoint_roundtrip_latest_and_best(setup, tmp_path):
    state = setup["state"]
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", keep=1)
    abstract = ckpt_lib.abstract_like(state)
    assert ckpt_lib.restore(manager, abstract) is None
    ckpt_lib.save(manager, 1, state, {"best_step": 1}, best_metric=0.5)
    later = dataclasses.replace(state, step=state.step + 7, rng=state.rng + 1)
    ckpt_lib.save(manager, 2, later, {"best_step": 1}, best_metric=0.9)
    ckpt_lib.save(manager, 3, later, {"best_step": 1})
    manager.wait_until_finished()
    assert 1 in manager.all_steps() and 3 in manager.all_steps()  # best kept beside the latest
    restored, meta = ckpt_lib.restore(manager, abstract)
    assert meta == {"best_step": 1}
    assert int(restored.step) == int(later.step)
    jax.tree.map(  # every array of the latest state, bit for bit
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored.gen_params, later.gen_params
    )
    np.testing.assert_array_equal(np.asarray(restored.rng), np.asarray(later.rng))
    leaf = jax.tree.leaves(restored.gen_params)[0]
    assert leaf.sharding == jax.tree.leaves(state.gen_params)[0].sharding
    best, _ = ckpt_lib.restore(manager, abstract, which="best")
    np.testing.assert_array_equal(np.asarray(best.rng), np.asarray(state.rng))


def test_checkpoint_of_another_config_names_the_arrays(setup, tmp_path):
    """A state of other shapes (another config / version) fails with the arrays named, not orbax's
    anonymous shape error; a step number restores that step."""
    state = setup["state"]
    manager = ckpt_lib.make_manager(tmp_path / "ckpt", keep=2)
    ckpt_lib.save(manager, 4, state, {"n": 4})
    ckpt_lib.save(manager, 9, dataclasses.replace(state, step=state.step + 5), {"n": 9})
    manager.wait_until_finished()
    abstract = ckpt_lib.abstract_like(state)
    restored, meta = ckpt_lib.restore(manager, abstract, which=4)
    assert meta == {"n": 4} and int(restored.step) == int(state.step)
    with pytest.raises(ValueError, match="step 5 is not in"):
        ckpt_lib.restore(manager, abstract, which=5)

    kernel = abstract.gen_params["regressor"]["out"]["kernel"]
    wider = dict(
        abstract.gen_params["regressor"]["out"],
        kernel=jax.ShapeDtypeStruct((kernel.shape[0], kernel.shape[1] + 1), kernel.dtype, sharding=kernel.sharding),
    )
    params = {**abstract.gen_params, "regressor": {**abstract.gen_params["regressor"], "out": wider}}
    other = dataclasses.replace(abstract, gen_params=params)
    expected = (
        rf"gen_params\.regressor\.out\.kernel: \({kernel.shape[0]}, {kernel.shape[1]}\) in the "
        rf"checkpoint, \({kernel.shape[0]}, {kernel.shape[1] + 1}\) from the config"
    )
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=expected):
        ckpt_lib.restore(manager, other)
    missing = dataclasses.replace(abstract, gen_params={**abstract.gen_params, "extra": kernel})
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"gen_params\.extra .* is not in the checkpoint"):
        ckpt_lib.restore(manager, missing)


def test_reduce_on_plateau_scales_learning_rate(setup):
    config = setup["config"]
    plateau_tx = optim.make_plateau(config.optim.plateau)
    state = setup["state"]
    update = jax.jit(lambda s, v: steps.update_plateau(plateau_tx, s, v))
    state = update(state, jnp.float32(1.0))
    for _ in range(config.optim.plateau.patience + 1):
        state = update(state, jnp.float32(2.0))
    assert float(state.plateau.scale) == pytest.approx(config.optim.plateau.factor)


def test_schedules(tiny_config):
    config = tiny_config("/unused")
    opt = config.optim.gen
    opt.learning_rate, opt.warmup_steps = 1.0, 10
    opt.schedule = "warmup_cosine"
    sched = functools.partial(optim.learning_rate, opt, num_steps=110)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(1.0)
    assert float(sched(110)) == pytest.approx(opt.end_factor)
    opt.schedule, opt.decay_every, opt.decay_factor = "step", 50, 0.1
    sched = functools.partial(optim.learning_rate, opt, num_steps=110)
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10 + 49)) == pytest.approx(1.0) and float(sched(10 + 50)) == pytest.approx(0.1)


def test_mean_params_file_6d_is_read_in_spins_layout(tmp_path, make_dataset, tiny_config):
    """A (144,) 6d pose in a mean-parameter file is SPIN's layout (R00, R01, R10, R11, R20, R21 per
    joint), closed form: an upright body seen by the camera (global orientation diag(1, -1, -1), 180
    deg about x) and identity joints -> axis-angle (pi, 0, 0) and zeros. The same rotations written
    as the model's own layout (columns concatenated) have parallel columns there: an error naming
    the key, not a silently wrong start."""
    rot = np.tile(np.eye(3), (24, 1, 1))
    rot[0] = np.diag([1.0, -1.0, -1.0])
    spin = rot[:, :, :2].reshape(144)
    assert spin[:6].tolist() == [1.0, 0.0, 0.0, -1.0, 0.0, 0.0]
    aa = regressor_lib.mean_pose_from_file(spin)
    np.testing.assert_allclose(np.abs(aa[:3]), [np.pi, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(aa[3:], 0.0, atol=1e-7)
    np.testing.assert_array_equal(regressor_lib.mean_pose_from_file(aa), aa)  # axis-angle kept

    data_dir = tmp_path / "data"
    make_dataset(data_dir, num=8, img_size=32)
    config = tiny_config(data_dir)
    paths = data_setup.resolve_data_paths(config, str(tmp_path / "wd"))
    columns = np.concatenate([rot[:, :, 0], rot[:, :, 1]], -1).reshape(144)  # the model's layout
    np.savez(tmp_path / "columns.npz", pose=columns, shape=np.zeros(10))
    config.model.mean_params = str(tmp_path / "columns.npz")
    with pytest.raises(config_checks.ConfigError, match=r"model\.mean_params.*joint\(s\) \[0, 1, 2"):
        mean_params.resolve_mean_params(config, paths)
    with pytest.raises(ValueError, match="72.*144"):
        regressor_lib.mean_pose_from_file(np.zeros(100))


def test_mean_params_resolve_from_training_split_file_or_zero(tmp_path, make_dataset, tiny_config):
    """model.mean_params: 'train' -> the training rows' mean (annotations.mean_smpl), written into
    the config; the untrained generator (zero last layer) then predicts exactly that; an .npz in
    SPIN's layout (6d pose) is read; 'zero' keeps the default start."""
    from hmr_jax.data import annotations as ann_lib
    from hmr_jax.models import hmr as hmr_lib

    data_dir = tmp_path / "data"
    ann_path = make_dataset(data_dir, num=8, img_size=32)
    config = tiny_config(data_dir)
    paths = data_setup.resolve_data_paths(config, str(tmp_path / "wd"))
    resolved = mean_params.resolve_mean_params(config, paths)
    assert config.model.mean_pose == ()  # the input config is not changed
    ann = ann_lib.load(ann_path)
    rows = ann_lib.split_indices(ann, "train", val_fraction=config.data.val_fraction)
    assert len(rows) == 6
    want_rot, want_betas = ann_lib.mean_smpl(ann.pose[rows], ann.shape[rows])
    np.testing.assert_allclose(resolved.model.mean_betas, want_betas, atol=1e-6)
    kw = dict(state_lib.generator_kwargs(resolved), final_init_gain=0.0)
    graphdef, params, stats = hmr_lib.init_generator(jax.random.key(0, impl="rbg"), **kw)
    out, _ = hmr_lib.apply_generator(graphdef, params, stats, jnp.zeros((2, 32, 32, 3)), None, train=False)
    np.testing.assert_allclose(out["pose_rotmat"][1], want_rot, atol=1e-5)
    np.testing.assert_allclose(out["betas"][0], want_betas, atol=1e-6)
    np.testing.assert_allclose(out["cam"][0], config.model.mean_cam, atol=1e-7)
    # the mean is not the zero pose: the labels are random
    assert np.abs(np.asarray(resolved.model.mean_pose[3:])).max() > 1e-3
    assert mean_params.resolve_mean_params(resolved, paths) is resolved  # already filled: kept

    # SPIN's layout: per joint the 3 x 2 of R's first two columns, row-major (SPIN: x.view(-1, 3, 2))
    rot6d = np.asarray(want_rot)[:, :, :2].reshape(144)
    np.savez(tmp_path / "mean.npz", pose=rot6d, shape=want_betas, cam=np.array([0.9, 0.0, 0.0]))
    config.model.mean_params = str(tmp_path / "mean.npz")
    from_file = mean_params.resolve_mean_params(config, paths)
    np.testing.assert_allclose(from_file.model.mean_pose, resolved.model.mean_pose, atol=1e-5)
    np.savez(tmp_path / "bad.npz", pose=rot6d)
    config.model.mean_params = str(tmp_path / "bad.npz")
    with pytest.raises(config_checks.ConfigError, match=r"model\.mean_params.*'shape'"):
        mean_params.resolve_mean_params(config, paths)
    config.model.mean_params = "zero"
    assert mean_params.resolve_mean_params(config, paths).model.mean_pose == ()
    config.model.mean_params = "mean.npz"  # not a file
    with pytest.raises(config_checks.ConfigError, match=r"model\.mean_params"):
        config_checks.validate_config(config)


def test_mean_smpl_of_equal_poses_is_that_pose():
    from hmr_jax.data import annotations as ann_lib

    rng = np.random.default_rng(0)
    pose = rng.normal(size=72) * 0.7
    pose[:3] = [np.pi - 0.1, 0.05, 0.0]  # near pi: the global orientation of upright bodies
    rot, betas = ann_lib.mean_smpl(np.tile(pose, (5, 1)), np.tile(np.arange(10.0), (5, 1)))
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(rot, Rotation.from_rotvec(pose.reshape(24, 3)).as_matrix(), atol=1e-6)
    np.testing.assert_allclose(betas, np.arange(10.0))
    aa, _ = ann_lib.mean_smpl_axis_angle(np.tile(pose, (5, 1)), np.zeros((5, 10)))
    np.testing.assert_allclose(Rotation.from_rotvec(aa.reshape(24, 3)).as_matrix(), rot, atol=1e-5)
    # two rotations +-t about one axis average to the identity
    both = np.zeros((2, 72))
    both[0, 3:6], both[1, 3:6] = [0.4, 0, 0], [-0.4, 0, 0]
    np.testing.assert_allclose(ann_lib.mean_smpl(both, np.zeros((2, 10)))[0][1], np.eye(3), atol=1e-7)


def test_val_annotations_file_is_the_validation_split(tmp_path, make_dataset, tiny_config):
    """data.val_annotations: the validation split is that file, whole (e.g. SPIN's
    h36m_valid_protocol1.npz beside h36m_train.npz, which holds no validation subjects)."""
    make_dataset(tmp_path / "data", num=8, img_size=32)
    make_dataset(tmp_path / "val", num=3, img_size=32, seed=1)
    config = tiny_config(tmp_path / "data", **{"data.val_annotations": str(tmp_path / "val" / "annotations.npz")})
    config_checks.validate_config(config)
    paths = data_setup.resolve_data_paths(config, str(tmp_path / "wd"))
    val = data_setup.make_source(config, config.data.val_split, paths)
    assert val.annotations == str(tmp_path / "val" / "annotations.npz") and val.split is None
    train = data_setup.make_source(config, config.data.train_split, paths)
    assert train.annotations == paths[1] and train.split == "train"
    config.data.val_annotations = "missing.npz"  # relative to data.dir
    with pytest.raises(config_checks.ConfigError, match=r"data\.val_annotations.*missing\.npz"):
        data_setup.make_source(config, config.data.val_split, paths)


def test_synthetic_render_size_renders_larger_images_for_the_same_crops(tmp_path, tiny_config):
    """data.synthetic.render_size: the generated dataset is rendered (and named) at that size; the
    pipeline still cuts data.img_size crops from it."""
    from PIL import Image

    config = tiny_config("", **{"data.synthetic.num": 8, "data.synthetic.render_size": 48})
    workdir = str(tmp_path / "wd")
    data_dir, ann, root = data_setup.prepare_data(config, workdir, str(body_model.default_body_model_path()))
    assert os.path.basename(data_dir) == f"{GENERATOR_VERSION}_48px_8_yaw20_fps1"
    names = sorted(os.listdir(os.path.join(data_dir, "images")))
    assert len(names) == 8 and Image.open(os.path.join(data_dir, "images", names[0])).size == (48, 48)
    source = data_setup.make_source(config, "train", (data_dir, ann, root))
    batch = next(iter(data_setup.make_input(config, source, train=False)))
    assert batch["image"].shape[1:] == (32, 32, 3)
    config.data.synthetic.render_size = 0  # = data.img_size: the dataset of 32 px renders
    assert (
        os.path.basename(data_setup.resolve_data_paths(config, workdir)[0]) == f"{GENERATOR_VERSION}_32px_8_yaw20_fps1"
    )


def test_log_lines_clear_the_progress_bar_line_first():
    """A log record written while the bar is drawn starts on a cleared line (not after the bar's
    text on the same line) and still gets through."""
    import io  # pylint: disable=g-import-not-at-top
    import logging  # pylint: disable=g-import-not-at-top

    import tqdm  # pylint: disable=g-import-not-at-top

    out = io.StringIO()
    bar = tqdm.tqdm(total=10, file=out, mininterval=0, ascii=True)
    bar.update(3)
    handler = logging.StreamHandler(out)
    handler.addFilter(trainer._bar_clearing_filter(bar))  # pylint: disable=protected-access
    logger = logging.getLogger("test_log_lines_clear_the_progress_bar_line_first")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("checkpoint saved")
    bar.close()
    before, line = out.getvalue().split("checkpoint saved")[0].rsplit("\r", 1)
    assert line == "" and "3/10" in before and before.endswith(" ")  # the bar's text blanked out
    assert "checkpoint saved\n" in out.getvalue()

"""The training state: `TrainState` (one pytree), the static parts beside it (`StaticParts`: NNX graphdefs,
optimisers, schedules), and its construction: fresh, abstract (shapes and shardings), sharded."""

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hmr_jax import skeleton
from hmr_jax.config_checks import ConfigError
from hmr_jax.fitting import in_loop
from hmr_jax.models import hmr as hmr_lib
from hmr_jax.optim import learning_rate, make_optimizer, make_plateau

PyTree = Any
Batch = Mapping[str, Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training (one pytree; checkpointed whole)."""

    step: jax.Array  # () int32; also the data position
    num_steps: jax.Array  # () int32: the run's length, for the learning-rate schedules (train.num_steps,
    #                      or what train.time_budget_min fits: set while training, kept on resume)
    gen_params: PyTree
    gen_batch_stats: PyTree
    gen_opt_state: PyTree
    disc_params: PyTree
    disc_opt_state: PyTree
    plateau: PyTree  # optax.contrib.ReduceLROnPlateauState; scale multiplies both learning rates
    rng: jax.Array  # (2,) uint32 raw key
    fits: PyTree  # train.fit_in_loop: the per-sample best fits (`fitting.in_loop.init_table`), else {}


class StaticParts(NamedTuple):
    """Static parts: NNX graphdefs and optax transformations (closed over by the steps)."""

    gen: Any
    disc: Any
    gen_tx: optax.GradientTransformation
    disc_tx: optax.GradientTransformation
    gen_lr: Callable[[jax.Array, jax.Array], jax.Array]  # (step, num_steps) -> learning rate
    disc_lr: Callable[[jax.Array, jax.Array], jax.Array]
    plateau_tx: optax.GradientTransformationExtraArgs


def generator_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`hmr.build_generator`'s arguments. The regressor starts from model.mean_pose / mean_betas
    once `resolve_mean_params` has filled them (a run's config.json holds them), else from
    `regressor.default_mean_params`; its camera from model.mean_cam (the default's when empty)."""
    m = config.model
    return dict(
        mean_pose=tuple(m.mean_pose) or None,
        mean_betas=tuple(m.mean_betas) or None,
        mean_cam=tuple(m.mean_cam) or None,
        depth=m.depth,
        width=m.width,
        dtype=m.dtype,
        rot_repr=m.rot_repr,
        hidden=tuple(m.hidden),
        hidden_activation=m.hidden_activation,
        dropout=m.dropout,
        n_iter=m.n_iter,
        final_init_gain=m.final_init_gain,
        bn_momentum=m.bn_momentum,
        zero_init_residual=m.zero_init_residual,
        keypoint_head=keypoint_head_kwargs(config),
    )


def keypoint_head_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """`build_generator`'s keypoint_head: None when model.keypoint_head is off."""
    head = config.model.keypoint_head
    if not head.enabled:
        return None
    return dict(
        num_keypoints=int(head.num_keypoints),
        channels=int(head.channels),
        stride=int(head.stride),
        input_scale=float(head.input_scale),
    )


def discriminator_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    d = config.model.disc
    return dict(
        joint_hidden=tuple(d.joint_hidden), pose_hidden=tuple(d.pose_hidden), shape_hidden=tuple(d.shape_hidden)
    )


def check_keypoint_head(config, joint_set: str) -> None:
    """The keypoint head predicts the dataset's joints: model.keypoint_head.num_keypoints must match."""
    head = keypoint_head_kwargs(config)
    n = skeleton.get_joint_set(joint_set).num_joints
    if head is not None and head["num_keypoints"] != n:
        raise ConfigError(
            f"config 'model.keypoint_head.num_keypoints': the dataset's joint set {joint_set!r} has "
            f"{n} joints, found {head['num_keypoints']}"
        )


def make_static_parts(config: ml_collections.ConfigDict) -> StaticParts:
    """Graphdefs (from abstract initialisation: no arrays are allocated) and optimisers."""
    key = jax.random.PRNGKey(0)
    gen_def = jax.eval_shape(functools.partial(hmr_lib.init_generator, **generator_kwargs(config)), key)[0]
    disc_def = jax.eval_shape(functools.partial(hmr_lib.init_discriminator, **discriminator_kwargs(config)), key)[0]
    return StaticParts(
        gen_def,
        disc_def,
        make_optimizer(config.optim.gen),
        make_optimizer(config.optim.disc),
        functools.partial(learning_rate, config.optim.gen),
        functools.partial(learning_rate, config.optim.disc),
        make_plateau(config.optim.plateau),
    )


def _rbg_key(key: jax.Array) -> jax.Array:
    """A raw threefry key (uint32[2]) as an 'rbg' key for parameter initialisation: XLA compiles
    the initialisers of a ResNet from rbg keys several times faster than from threefry keys."""
    return jax.random.wrap_key_data(jnp.tile(key, 2), impl="rbg")


def init_state(config: ml_collections.ConfigDict, parts: StaticParts, key: jax.Array) -> TrainState:
    """Fresh state from a raw PRNG key (pure: jit it with out_shardings, or eval_shape it)."""
    k_gen, k_disc, k_train = jax.random.split(key, 3)
    _, gen_params, gen_stats = hmr_lib.init_generator(_rbg_key(k_gen), **generator_kwargs(config))
    _, disc_params = hmr_lib.init_discriminator(_rbg_key(k_disc), **discriminator_kwargs(config))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        num_steps=jnp.asarray(config.train.num_steps, jnp.int32),
        gen_params=gen_params,
        gen_batch_stats=gen_stats,
        gen_opt_state=parts.gen_tx.init(gen_params),
        disc_params=disc_params,
        disc_opt_state=parts.disc_tx.init(disc_params),
        plateau=parts.plateau_tx.init(jnp.zeros((), jnp.float32)),
        rng=k_train,
        fits=in_loop.init_table(int(config.train.fit_table_size)) if config.train.fit_in_loop else {},
    )


def abstract_state(config, parts: StaticParts, mesh: jax.sharding.Mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state, without allocating it."""
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(functools.partial(init_state, config, parts), jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)


def create_sharded_state(config, parts: StaticParts, mesh: jax.sharding.Mesh) -> TrainState:
    """Initialise the state directly with replicated shardings (no host round trip)."""
    replicated = NamedSharding(mesh, P())
    abstract = abstract_state(config, parts, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    init = functools.partial(init_state, config, parts)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed))
    if config.model.pretrained_encoder:
        params, stats = hmr_lib.load_pretrained_encoder(
            state.gen_params, state.gen_batch_stats, config.model.pretrained_encoder
        )
        put = lambda t: jax.device_put(t, replicated)  # noqa: E731
        state = dataclasses.replace(
            state,
            gen_params=put(params),
            gen_batch_stats=put(stats),
            gen_opt_state=jax.jit(
                parts.gen_tx.init, out_shardings=jax.tree.map(lambda _: replicated, abstract.gen_opt_state)
            )(put(params)),
        )
    return state

"""Flax NNX modules of HMR: ResNet encoder, iterative regressor, 25-way discriminator.

NNX stays inside this package. Code outside sees pytrees only, through the pure functions of
`hmr_jax.models.hmr`: `init_generator`, `init_discriminator`, `apply_generator`,
`apply_discriminator` (params and batch statistics are plain nested dicts of arrays).
"""

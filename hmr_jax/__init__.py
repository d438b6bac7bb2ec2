"""hmr_jax: HMR in pure JAX."""

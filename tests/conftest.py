"""Test setup, once for the whole suite: cheap XLA CPU compiles and a persistent compilation cache
(set before jax is imported anywhere: an `XLA_FLAGS` set after that does nothing), and the `slow`
marker of the end-to-end runs in subprocesses (`python -m pytest -m "not slow"` skips them)."""

import os

import trainer_helpers as th

os.environ.setdefault("XLA_FLAGS", th.FAST_COMPILE_FLAGS)

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", th.CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run of a CLI in subprocesses (minutes)")

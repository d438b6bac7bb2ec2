"""Loading config files (configs/*.py) by path, as `ml_collections.config_flags` does.

A config file cannot import the base it builds on (it is not a module of a package), so it
calls `sibling(__file__, "h36m_hmr.py")` instead.
"""

import importlib.util
import os

import ml_collections


def load(path: str | os.PathLike, arg=None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path`."""
    path = os.fspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"hmr_jax_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def sibling(anchor_file: str, name: str, arg=None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file `name` in the folder of `anchor_file` (pass `__file__`)."""
    return load(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), name), arg)

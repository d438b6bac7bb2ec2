"""The device mesh and the few host/device crossings: global batches, replication, gathers, agreement
between processes."""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
Batch = Mapping[str, Any]


def make_mesh() -> jax.sharding.Mesh:
    """1-D mesh over every device of every process, axis 'data'."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def to_global(batch: Batch, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's numpy batch -> global arrays sharded over 'data' (leading axis)."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """`tree` on every device of the mesh (replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def gather(x: jax.Array) -> np.ndarray:
    """A global array, whole, as numpy on every process."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def broadcast_int(value: int | None) -> int | None:
    """Process 0's value on every process (None: -1 on the wire)."""
    if jax.process_count() == 1:
        return value
    out = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if value is None else value)))
    return None if out < 0 else out


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)

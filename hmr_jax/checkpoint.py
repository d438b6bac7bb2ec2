"""Checkpoints: one orbax `CheckpointManager` per run directory, two small functions around it.

Each checkpoint holds two items: ``state`` (the whole `TrainState` pytree, saved with
`ocp.args.StandardSave`) and ``meta`` (a small JSON dict: best validation value and step, early
stopping counter, ...). The manager keeps the last ``keep`` checkpoints plus the best one (by the
``metrics`` passed at save time, lower is better); saves are asynchronous, so call
``manager.wait_until_finished()`` before the process exits.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

BEST_KEY = "best_metric"  # key of the `metrics` dict passed to `save` (lower is better)


def make_manager(directory: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    """A manager in `directory` keeping the latest `keep` checkpoints and the best one."""
    if keep < 1:
        raise ValueError(f"checkpoint keep: expected a positive number of checkpoints, found {keep}")
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        # BestN keeps the *largest* values: negate so that the lowest metric wins.
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: -float(m[BEST_KEY]), n=1, keep_checkpoints_without_metrics=False
        ),
    ])
    options = ocp.CheckpointManagerOptions(create=True, preservation_policy=policy)
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, best_metric: float | None = None
) -> None:
    """Save `state` and the JSON `meta` at `step` (asynchronously; every process must call it).

    `best_metric` (lower is better) ranks the checkpoint for the keep-the-best policy; pass it only
    when a validation value was computed for this state.
    """
    metrics = None if best_metric is None else {BEST_KEY: float(best_metric)}
    if step in manager.all_steps():  # e.g. a SIGTERM right after a periodic save
        return
    manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics,
        force=True,
    )


def restore(manager: ocp.CheckpointManager, abstract_state: Any, which: str = "latest") -> tuple[Any, dict] | None:
    """Restore the latest (or best) checkpoint onto `abstract_state`'s shapes, dtypes and shardings.

    Args:
      manager: from `make_manager`.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `sharding` set (see `abstract_like`).
      which: 'latest', or 'best' (the step recorded as ``meta['best_step']`` in the latest
        checkpoint; falls back to the latest if none was recorded).

    Returns:
      (state, meta), or None when the directory holds no checkpoint.
    """
    if which not in ("latest", "best"):
        raise ValueError(f"checkpoint restore 'which': expected 'latest' or 'best', found {which!r}")
    step = manager.latest_step()
    if step is None:
        return None
    if which == "best":
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        best = meta.get("best_step")
        if best is not None and best in manager.all_steps():
            step = int(best)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], dict(restored["meta"])


def abstract_like(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s (with shardings) of a pytree of arrays or abstract arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )

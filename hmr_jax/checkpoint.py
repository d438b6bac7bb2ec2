"""Checkpoints: one orbax `CheckpointManager` per run directory, two small functions around it.

Each checkpoint holds two items: ``state`` (the whole `TrainState` pytree, saved with
`ocp.args.StandardSave`) and ``meta`` (a small JSON dict: best validation value and step, early
stopping counter, ...). The manager keeps the last ``keep`` checkpoints plus the best one (by the
``metrics`` passed at save time, lower is better); saves are asynchronous, so call
``manager.wait_until_finished()`` before the process exits. `restore` first compares the saved
arrays' names and shapes with the state it is asked for (`mismatches`) and refuses a checkpoint of
another config or version with the differing arrays named.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

BEST_KEY = "best_metric"  # key of the `metrics` dict passed to `save` (lower is better)
MAX_LISTED = 5  # differences named in a CheckpointMismatchError


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not match the state the current config builds (another model
    size, optimiser or hmr_jax version): names the arrays that differ."""


def make_manager(directory: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    """A manager in `directory` keeping the latest `keep` checkpoints and the best one."""
    if keep < 1:
        raise ValueError(f"checkpoint keep: expected a positive number of checkpoints, found {keep}")
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(n=keep),
            # BestN keeps the *largest* values: negate so that the lowest metric wins.
            ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: -float(m[BEST_KEY]), n=1, keep_checkpoints_without_metrics=False
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(create=True, preservation_policy=policy)
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, best_metric: float | None = None) -> None:
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


def restore(
    manager: ocp.CheckpointManager, abstract_state: Any, which: str | int = "latest"
) -> tuple[Any, dict] | None:
    """Restore the latest (or best, or a given step's) checkpoint onto `abstract_state`'s shapes,
    dtypes and shardings.

    Args:
      manager: from `make_manager`.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `sharding` set (see `abstract_like`).
      which: 'latest', 'best' (the step recorded as ``meta['best_step']`` in the latest
        checkpoint; falls back to the latest if none was recorded) or a step number.

    Returns:
      (state, meta), or None when the directory holds no checkpoint.

    Raises:
      CheckpointMismatchError: the checkpoint holds arrays of other shapes or names than
        `abstract_state` (e.g. written with another config); the message names them.
    """
    if not (which in ("latest", "best") or (isinstance(which, int) and not isinstance(which, bool))):
        raise ValueError(f"checkpoint restore 'which': expected 'latest', 'best' or a step, found {which!r}")
    step = manager.latest_step()
    if step is None:
        return None
    if which == "best":
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        best = meta.get("best_step")
        if best is not None and best in manager.all_steps():
            step = int(best)
    elif isinstance(which, int):
        if which not in manager.all_steps():
            raise ValueError(
                f"checkpoint step {which} is not in {manager.directory}; found steps {sorted(manager.all_steps())}"
            )
        step = which
    # Checked first: orbax's own error for a shape mismatch names no array, and its aborted reads
    # print tracebacks at exit.
    differences = mismatches(manager.directory / str(step) / "state", abstract_state)  # an epath.Path
    if differences:
        listed = "; ".join(differences[:MAX_LISTED]) + (" ..." if len(differences) > MAX_LISTED else "")
        raise CheckpointMismatchError(
            f"checkpoint {manager.directory}/{step}: its state does not match the one this config (and "
            f"hmr_jax version) builds ({len(differences)} array(s) differ: {listed}). Resume with the config "
            f"it was written with (config.json in the run directory), or train into a new --workdir."
        )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
    )
    return restored["state"], dict(restored["meta"])


def mismatches(state_dir: Any, abstract_state: Any) -> list[str]:
    """The arrays whose names (orbax's dotted paths) or shapes differ between the saved state in
    `state_dir` (an `etils.epath.Path`, as `CheckpointManager.directory`) and `abstract_state`, one
    line each."""
    saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(ocp.StandardCheckpointHandler().metadata(state_dir).tree)}
    wanted = {
        ".".join(ocp.tree.str_keypath(path)): tuple(x.shape)
        for path, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    }
    out = []
    for name in sorted(saved.keys() | wanted.keys(), key=lambda n: ("opt_state" in n, n)):  # parameters first
        if name not in saved:
            out.append(f"{name} {wanted[name]} is not in the checkpoint")
        elif name not in wanted:
            out.append(f"{name} {saved[name]} is only in the checkpoint")
        elif saved[name] != wanted[name]:
            out.append(f"{name}: {saved[name]} in the checkpoint, {wanted[name]} from the config")
    return out


def abstract_like(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s (with shardings) of a pytree of arrays or abstract arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)

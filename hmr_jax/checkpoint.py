"""Checkpoints: one orbax `CheckpointManager` per run directory, two small functions around it.

Each checkpoint holds two items: ``state`` (the whole `TrainState` pytree, saved with
`ocp.args.StandardSave`) and ``meta`` (a small JSON dict: best validation value and step, early
stopping counter, ...). The manager keeps the last ``keep`` checkpoints plus the best one (by the
``metrics`` passed at save time, lower is better); saves are asynchronous, so call
``manager.wait_until_finished()`` before the process exits. `restore` first compares the saved
arrays' names and shapes with the state it is asked for (`mismatches`) and refuses a checkpoint of
another config or version with the differing arrays named.

Failures are summarised in one line instead of orbax's tracebacks. Each finished save gets a
checksum file (`CHECKSUMS`: size and CRC32 of every file), checked before a restore, so a
truncated, deleted, emptied or altered file is named; `restore_newest` (training's resume) skips
such a checkpoint for the newest one that restores, `restore` ('latest' / 'best' / a step, for
evaluate and predict) raises `CheckpointCorruptError` naming it and the others. A background save
that fails (a full disk) is noticed by `check_saved` as soon as it ends and raised as
`CheckpointSaveError`, its temporary folder removed, the earlier checkpoints left intact.
"""

import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import sys
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp

BEST_KEY = "best_metric"  # key of the `metrics` dict passed to `save` (lower is better)
MAX_LISTED = 5  # differences named in a CheckpointMismatchError
CHECKSUMS = "hmr_jax_checksums.json"  # in each step's folder, written once its save has finished
DAMAGED_SUFFIX = ".damaged"  # a skipped checkpoint's folder is renamed <step>.damaged (orbax ignores it)


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored or saved; the message is one line naming it."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose arrays do not match the state the current config builds (another model
    size, optimiser or hmr_jax version): names the arrays that differ."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint whose files are damaged (truncated, missing, empty, altered): names the
    checkpoint and the first damaged file or orbax's reason."""


class CheckpointSaveError(CheckpointError):
    """A save that failed (e.g. no space left on the disk): names the file system and the size."""


class Manager(ocp.CheckpointManager):
    """`ocp.CheckpointManager` that remembers its save in flight: (step, bytes of the state)."""

    pending: tuple[int, int] | None = None


def make_manager(directory: str | os.PathLike, keep: int) -> Manager:
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
    return Manager(os.path.abspath(os.fspath(directory)), options=options)


def save(manager: Manager, step: int, state: Any, meta: dict, best_metric: float | None = None) -> None:
    """Save `state` and the JSON `meta` at `step` (asynchronously; every process must call it).

    `best_metric` (lower is better) ranks the checkpoint for the keep-the-best policy; pass it only
    when a validation value was computed for this state. The previous save is confirmed first
    (`check_saved`); this one is confirmed by the next `check_saved` or `finish`.

    Raises:
      CheckpointSaveError: this or the previous save failed (e.g. the disk is full).
    """
    check_saved(manager, wait=True)
    metrics = None if best_metric is None else {BEST_KEY: float(best_metric)}
    if step in manager.all_steps():  # e.g. a SIGTERM right after a periodic save
        return
    manager.pending = (int(step), sum(int(x.nbytes) for x in jax.tree.leaves(state)))
    _ORBAX_LOGS.quiet()  # orbax's threads log each failure's traceback as it happens
    try:
        manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics=metrics,
            force=True,
        )
    except Exception as e:  # noqa: BLE001 (the synchronous part failed: summarised like the rest)
        check_saved(manager, wait=True, error=e)


def check_saved(manager: Manager, wait: bool = False, error: BaseException | None = None) -> None:
    """Confirm the save in flight once it has finished (`wait`: block until it has; otherwise a
    save still running is left alone): write its checksums, or raise its failure in one line.

    Raises:
      CheckpointSaveError: the save failed; its temporary folder is removed first.
    """
    if manager.pending is None or not (wait or error is not None or not manager.is_saving_in_progress()):
        return
    step, nbytes = manager.pending
    manager.pending = None
    try:
        if error is None:
            manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
        error = e
    finally:
        _ORBAX_LOGS.loud()
    if error is not None:
        logging.debug("checkpoint save of step %d failed", step, exc_info=error)
        raise _save_error(manager, step, nbytes, error) from None
    if jax.process_index() == 0:
        write_checksums(manager.directory / str(step))


def finish(manager: Manager) -> None:
    """Wait for the save in flight and confirm it (before the process exits)."""
    check_saved(manager, wait=True)
    manager.wait_until_finished()


def _save_error(manager: Manager, step: int, nbytes: int, error: BaseException) -> CheckpointSaveError:
    """The one-line error of a failed save, after removing its temporary folder."""
    directory = os.fspath(manager.directory)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if ".orbax-checkpoint-tmp" in name:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    manager.reload()
    kept = sorted(manager.all_steps())
    intact = f"the earlier checkpoints ({', '.join(map(str, kept))}) are intact" if kept else "no earlier checkpoint"
    if _is_no_space(error):
        mount = os.path.abspath(directory)
        while not os.path.ismount(mount):
            mount = os.path.dirname(mount)
        free = shutil.disk_usage(directory).free / 2**20
        return CheckpointSaveError(
            f"no space left on {mount} (checkpoint {directory}/{step}), the checkpoint needed "
            f"~{max(1, round(nbytes / 2**20))} MB and {free:.0f} MB are free; {intact}"
        )
    return CheckpointSaveError(f"checkpoint {directory}/{step} could not be written: {_reason(error)}; {intact}")


def _is_no_space(error: BaseException) -> bool:
    for e in _chain(error):
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "no space left" in str(e).lower():
            return True
    return False


def write_checksums(step_dir: Any) -> None:
    """Size and CRC32 of every file under `step_dir` (a finished checkpoint) into its `CHECKSUMS`."""
    root = os.fspath(step_dir)
    sums = {rel: [os.path.getsize(os.path.join(root, rel)), _crc32(os.path.join(root, rel))] for rel in _files(root)}
    tmp = os.path.join(root, CHECKSUMS + ".tmp")
    with open(tmp, "w") as f:
        json.dump(sums, f)
    os.replace(tmp, os.path.join(root, CHECKSUMS))


def damage(step_dir: Any) -> str | None:
    """What is wrong with the files of the checkpoint in `step_dir` by its `CHECKSUMS` (None: nothing
    found, or no checksums written)."""
    root = os.fspath(step_dir)
    try:
        with open(os.path.join(root, CHECKSUMS)) as f:
            sums = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return f"{CHECKSUMS} is unreadable ({e})"
    problems = []
    for rel, (size, crc) in sorted(sums.items()):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            problems.append(f"{rel} is missing")
        elif (found := os.path.getsize(path)) != size:
            problems.append(f"{rel} is {'empty' if found == 0 else 'truncated'} ({found} of {size} bytes)")
        elif _crc32(path) != crc:
            problems.append(f"{rel} differs from what was saved (checksum mismatch)")
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} other file(s))" if len(problems) > 1 else "")


def _files(root: str) -> list[str]:
    out = []
    for folder, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(folder, n), root) for n in names if not n.startswith(CHECKSUMS)]
    return sorted(out)


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def restore(manager: Manager, abstract_state: Any, which: str | int = "latest") -> tuple[Any, dict] | None:
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
      CheckpointCorruptError: the checkpoint's files are damaged; the message names it, the
        cause and the other checkpoints.
    """
    if not (which in ("latest", "best") or (isinstance(which, int) and not isinstance(which, bool))):
        raise ValueError(f"checkpoint restore 'which': expected 'latest', 'best' or a step, found {which!r}")
    step = manager.latest_step()
    if step is None:
        return None
    try:
        if which == "best":
            best = _restore_step(manager, step, None)[1].get("best_step")
            if best is not None and best in manager.all_steps():
                step = int(best)
        elif isinstance(which, int):
            if which not in manager.all_steps():
                raise ValueError(
                    f"checkpoint step {which} is not in {manager.directory}; found steps {sorted(manager.all_steps())}"
                )
            step = which
        return _restore_step(manager, step, abstract_state)
    except CheckpointCorruptError as e:
        others = sorted(set(manager.all_steps()) - {step})
        listed = (
            f"the other checkpoints there: steps {', '.join(map(str, others))}" if others else "no other checkpoint"
        )
        raise CheckpointCorruptError(f"{e} ({which} checkpoint); {listed}") from None


def restore_newest(manager: Manager, abstract_state: Any) -> tuple[Any, dict] | None:
    """Restore the newest checkpoint that restores (training's resume). Damaged newer ones are
    logged, renamed `<step>.damaged` (kept for inspection, out of the manager's way) and skipped.

    Returns (state, meta), or None when the directory holds no checkpoint.

    Raises:
      CheckpointMismatchError: as `restore` (not skipped: the config is wrong, not the files).
      CheckpointCorruptError: every checkpoint is damaged; the message names each and why.
    """
    skipped = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = _restore_step(manager, step, abstract_state)
        except CheckpointCorruptError as e:
            logging.warning("Skipping %s", e)
            skipped.append((step, str(e)))
            continue
        if jax.process_index() == 0:
            for bad, _ in skipped:
                path = os.path.join(os.fspath(manager.directory), str(bad))
                os.replace(path, path + DAMAGED_SUFFIX)
        if skipped:
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils  # noqa: PLC0415

                multihost_utils.sync_global_devices("hmr_jax_damaged_checkpoints_moved")
            manager.reload()
            logging.warning("Resuming from checkpoint %s/%d (the newest that restores)", manager.directory, step)
        return restored
    if skipped:
        raise CheckpointCorruptError(
            f"no checkpoint in {manager.directory} restores: "
            + "; ".join(msg for _, msg in skipped)
            + ". Move the folder away to train afresh."
        )
    return None


def _restore_step(manager: Manager, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state, meta) of `step` (only meta when `abstract_state` is None), failures in one line."""
    where = f"checkpoint {manager.directory}/{step}"
    cause = None if abstract_state is None else damage(manager.directory / str(step))  # meta: read, not summed
    if cause:
        raise CheckpointCorruptError(f"{where} is damaged: {cause}")
    try:
        if abstract_state is None:
            with _ORBAX_LOGS.quieted():
                meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            return None, dict(meta)
        # Checked first: orbax's own error for a shape mismatch names no array.
        differences = mismatches(manager.directory / str(step) / "state", abstract_state)  # an epath.Path
    except Exception as e:  # noqa: BLE001
        raise CheckpointCorruptError(f"{where} is damaged: {_reason(e)}") from None
    if differences:
        listed = "; ".join(differences[:MAX_LISTED]) + (" ..." if len(differences) > MAX_LISTED else "")
        raise CheckpointMismatchError(
            f"checkpoint {manager.directory}/{step}: its state does not match the one this config (and "
            f"hmr_jax version) builds ({len(differences)} array(s) differ: {listed}). Resume with the config "
            f"it was written with (config.json in the run directory), or train into a new --workdir."
        )
    try:
        with _ORBAX_LOGS.quieted():
            restored = manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
            )
    except Exception as e:  # noqa: BLE001
        logging.debug("%s: restore failed", where, exc_info=e)
        raise CheckpointCorruptError(f"{where} is damaged: {_reason(e)}") from None
    return restored["state"], dict(restored["meta"])


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and its causes / contexts, outermost first."""
    out = []
    while error is not None and error not in out:
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def _reason(error: BaseException) -> str:
    """One line from an orbax / TensorStore error chain: the innermost message that says something."""
    lines = []
    for e in _chain(error):
        line = next((s.strip() for s in str(e).splitlines() if s.strip()), "")
        line = line.split(" See full TensorStore details")[0]
        lines.append(f"{type(e).__name__}: {line}" if line else type(e).__name__)
    reason = lines[-1]
    return reason if len(reason) <= 300 else reason[:297] + "..."


class _OrbaxLogs(logging.Filter):
    """Drops orbax's error records with tracebacks (its threads log every failure of a save or read
    as it happens) while a save is in flight or a restore runs: the failure is raised in one line
    instead (its traceback logged at DEBUG). Python's 'Exception ignored' notes of orbax's aborted
    reads are held back too."""

    def __init__(self):
        super().__init__()
        self.depth = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)

    def quiet(self) -> None:
        if self.depth == 0:
            logging.getLogger("absl").addFilter(self)
        self.depth += 1

    def loud(self) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            logging.getLogger("absl").removeFilter(self)

    @contextlib.contextmanager
    def quieted(self):
        hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
        self.quiet()
        try:
            yield
        finally:
            gc.collect()  # the aborted reads' coroutines, while their notes are held back
            sys.unraisablehook = hook
            self.loud()


_ORBAX_LOGS = _OrbaxLogs()


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

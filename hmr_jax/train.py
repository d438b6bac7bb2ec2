"""Train HMR.

    python -m hmr_jax.train --config=configs/quickstart.py --workdir=workdirs/quickstart
    python -m hmr_jax.train --config=configs/h36m_hmr.py --workdir=DIR --config.train.num_steps=1000

Any config value can be overridden with `--config.<key>=<value>` (the config is locked: unknown
keys fail). A run resumes from `DIR/checkpoints` if present. Multi-host: pass `--distributed`
(or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) to call
`jax.distributed.initialize()`; each process then feeds its slice of the data.
SIGTERM saves a checkpoint and exits with status 0. On Linux the process re-executes itself once
with glibc's huge-page tunable (`hmr_jax.hugepages`: 1.26x faster quickstart steps; HMR_JAX_HUGEPAGES=0
turns it off).
"""

if __name__ == "__main__":  # before jax loads: glibc reads its malloc tunables at process start
    from hmr_jax import hugepages

    hugepages.ensure()

import logging
import os
import re
import sys
import traceback

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hmr_jax import checkpoint, config_checks, model_files, time_budget, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, images).", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _initialize_distributed() -> None:
    env = {k: os.environ[k] for k in _DISTRIBUTED_ENV if k in os.environ}
    if not (_DISTRIBUTED.value or env):
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
    if "JAX_NUM_PROCESSES" in env:
        kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in env:
        kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    logging.info(
        "jax.distributed: process %d of %d, %d devices in all",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )


def _quiet_orbax_logs() -> None:
    """Drop orbax's INFO / DEBUG records (~12 lines per checkpoint save: its async writers, atomic
    renames, finalisation) from the terminal and the log unless --verbosity was given; its
    warnings and errors, and every other module's logs, still show."""
    if flags.FLAGS["verbosity"].present:
        return
    orbax_dir = f"{os.sep}orbax{os.sep}"
    absl_logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= logging.WARNING or orbax_dir not in record.pathname
    )


def _fail(e: BaseException) -> None:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def raised_by_data(e: BaseException) -> bool:
    """Whether `e` was raised in `hmr_jax.data` (a bad dataset: a missing field, fewer samples than
    a batch, a missing file), whose messages name the input and say what is wrong."""
    frames = list(traceback.walk_tb(e.__traceback__))
    return bool(frames) and os.path.dirname(os.path.abspath(frames[-1][0].f_code.co_filename)).startswith(_DATA_DIR)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (ml_collections' messages span several)."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every flag error (an unknown config key, a value of the wrong type,
    a config file that does not load, a missing required flag) as one line on stderr, exit status 2."""
    try:
        args = flags.FLAGS(argv)
        config = flags.FLAGS["config"].value
        if config is not None:
            config.get  # noqa: B018  (config_flags defers a config file's load error to the first access)
        return args
    except flags.Error as e:
        message = one_line(e)
        if "; Traceback (most recent call last):" in message:  # a config file's get_config raised
            head, _, tail = message.partition("; Traceback (most recent call last):")
            message = f"{head.rstrip(':;')}: {tail.rsplit('; ', 1)[-1]}"
    except OSError as e:  # the config file did not load
        cause = e.__cause__ or e
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        message = (
            f"--config={flags.FLAGS['config'].config_filename}: could not load it: {lines[-1] if lines else cause}"
        )
    except (KeyError, AttributeError, TypeError, ValueError) as e:  # config_flags: a key, a type
        message = _override_error(e, argv)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _override_error(e: BaseException, argv: list[str]) -> str:
    """One line for an error config_flags raised while applying `--config.<key>=<value>` overrides."""
    chain, texts = e, []
    while chain is not None:
        texts.append(str(chain.args[0]) if isinstance(chain, KeyError) and chain.args else str(chain))
        chain = chain.__cause__ or chain.__context__
    hint = re.search(r"Did you mean [^?]*\?", "\n".join(texts))
    config_file, field_path = None, None
    for frame, _ in traceback.walk_tb(e.__traceback__):  # config_flags' _parse(self, argument): the file
        local = frame.f_locals
        if isinstance(local.get("self"), flags.Flag) and isinstance(local.get("argument"), str):
            config_file = local["argument"]
            field_path = local.get("field_path") if isinstance(local.get("field_path"), str) else None
    overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    if isinstance(e, (KeyError, AttributeError)):
        missing = texts[-1].splitlines()[0].strip("'\"") if texts[-1] else ""  # the innermost: the key
        names = [f"--config.{field_path}"] if field_path else [o for o in overrides if missing in o.split(".")[1:]]
        flag = names[0] if names else "--config.<key>"
        where = f" {config_file}" if config_file else ""
        return f"{flag}: no such key in the config{where} (it is locked)" + (f"; {hint.group(0)}" if hint else "")
    flag = f"--config.{field_path}: " if field_path else f"--config={config_file}: " if config_file else ""
    return f"{flag}{type(e).__name__}: {one_line(e)}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (e.g. --config=configs/quickstart.py)")
    _quiet_orbax_logs()
    _initialize_distributed()
    try:
        result = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, start_time=time_budget.process_start_time())
    except (config_checks.ConfigError, checkpoint.CheckpointError, model_files.ModelFileError, FloatingPointError) as e:
        _fail(e)
    except (ValueError, FileNotFoundError) as e:
        if not raised_by_data(e):  # elsewhere: a bug, with its traceback
            raise
        _fail(e)
    summary = {"step": result["step"], **result["eval"]}
    if result["interrupted"]:
        logging.info("Interrupted at step %d (checkpoint saved).", result["step"])
    logging.info("Done: %s", summary)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

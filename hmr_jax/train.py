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
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hmr_jax import checkpoint, config_checks, time_budget, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, images).", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")

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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (e.g. --config=configs/quickstart.py)")
    _quiet_orbax_logs()
    _initialize_distributed()
    try:
        result = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, start_time=time_budget.process_start_time())
    except (config_checks.ConfigError, checkpoint.CheckpointMismatchError, FloatingPointError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    summary = {"step": result["step"], **result["eval"]}
    if result["interrupted"]:
        logging.info("Interrupted at step %d (checkpoint saved).", result["step"])
    logging.info("Done: %s", summary)


if __name__ == "__main__":
    app.run(main)

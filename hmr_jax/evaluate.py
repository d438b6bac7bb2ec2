"""Evaluate a trained HMR checkpoint on a split (`hmr_jax.evaluation` does the work).

    python -m hmr_jax.evaluate --workdir=DIR [--split=validation] [--checkpoint=best|latest|STEP]
        [--h36m-regressor=J_regressor_h36m.npy] [--batch-size=N] [--out=FILE.json] [--[no]flip_test]

Prints the metrics table and writes it as JSON (default DIR/eval/<split>_step<step>.json).
"""

if __name__ == "__main__":  # before jax loads: glibc reads its malloc tunables at process start
    from hmr_jax import hugepages

    hugepages.ensure()

import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from hmr_jax import evaluation

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by hmr_jax.train.", required=True)
_SPLIT = flags.DEFINE_string("split", "validation", "'validation', 'train' or 'all' (the whole file).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
_H36M = flags.DEFINE_string(
    "h36m-regressor",
    None,
    "(17, V) Human3.6M joint regressor (.npy/.npz): adds the "
    "H36M Protocol 1/2 metrics (default: config eval.h36m_regressor, if any).",
)
_BATCH = flags.DEFINE_integer("batch-size", None, "Global eval batch (default: config data.eval_batch_size).")
_OUT = flags.DEFINE_string("out", None, "JSON output path (default: DIR/eval/<split>_step<step>.json).")
_DATA = flags.DEFINE_multi_string(
    "data",
    [],
    "Evaluate on other data than the run's: data.<KEY>=VALUE, e.g. --data dir=/data/h36m "
    "--data annotations=h36m_valid_protocol2.npz (with --split=all for a whole file).",
)
_MALE = flags.DEFINE_string(
    "body-model-male", None, "SMPL male model: the ground truth of samples annotated male (3DPW)."
)
_FEMALE = flags.DEFINE_string(
    "body-model-female", None, "SMPL female model: the ground truth of samples annotated female (3DPW)."
)
_FLIP = flags.DEFINE_boolean(
    "flip_test",
    None,
    "Average each prediction with the mirrored prediction for the "
    "mirror image (default: config eval.flip_test; --noflip_test turns it off).",
)


def _parse_data(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--data {item!r}: expected KEY=VALUE, e.g. --data annotations=h36m_valid_protocol2.npz")
        out[key.strip().removeprefix("data.")] = value.strip()
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # orbax logs several lines per restore
        absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        report = evaluation.evaluate(
            _WORKDIR.value,
            split=_SPLIT.value,
            checkpoint=_CHECKPOINT.value,
            h36m_regressor=_H36M.value,
            batch_size=_BATCH.value,
            out_path=_OUT.value,
            flip_test=_FLIP.value,
            data=_parse_data(_DATA.value),
            body_model_male=_MALE.value,
            body_model_female=_FEMALE.value,
        )
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0:
        print(evaluation.format_table(report))


if __name__ == "__main__":
    app.run(main)

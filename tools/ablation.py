"""Table 1 of the report as an ablation on the synthetic set, every row under the same CPU budget.

Each row is a row of configs/table1.py (`--config=configs/table1.py:ROW`), trained with `python -m hmr_jax.train` for --steps steps
on the synthetic dataset (generated once, shared by the rows) in its own workdir under --root,
then scored with `python -m hmr_jax.evaluate` on the validation split (latest checkpoint).
Prints one table (validation v2v L2, MPJPE, PA-MPJPE, PVE, share of joints outside limits, plus
the mean-pose baseline -- the regressor's starting point -- and the training set's mean pose and
shape) and writes it as ROOT/ablation.md and ROOT/ablation.json.

Rows (--rows, in this order by default):
  linear_default  linear head on the small default encoder (ResNet-18 width 16), SGD  (Table 1 row 1)
  resnet          linear head on ResNet-50, Adam                                       (row 3)
  iterative       + the 5-iteration error-feedback regressor                          (row 4)
  adversarial     + the adversarial prior (25 discriminators), no resampling
  resample        + resampling 0.5: every 2nd frame                                   (rows 5-6)
  resnet18        (optional) linear head on ResNet-18 width 64, SGD                   (row 2)

The ResNet rows run at --resnet-width (16 by default, to fit a CPU; the configs' own width is 64:
pass --resnet-width=0 to keep it); the default row keeps its own small encoder (ResNet-18 width 16).
Every row gets the same synthetic data, steps, batch, crop size and seed.

Run (the full ablation; time one row first, e.g. with --rows=resnet):
    python tools/ablation.py --root=workdirs/ablation --steps=3000
Smallest end-to-end check (minutes):
    python tools/ablation.py --root=/tmp/ablation --steps=2 --img-size=32 --batch-size=8 \
        --num-synthetic=64 --resnet-width=8 --set=model.width=8

Rows already trained to --steps resume instantly (the trainer resumes from the workdir), so a
re-run only re-evaluates; use a fresh --root to start over.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    label: str
    config: str  # the row of configs/table1.py (its get_config argument)
    resnet: bool = True  # --resnet-width / --resnet-depth apply


ROWS = (
    Row("linear_default", "Linear head, small default encoder (SGD)", "linear_default", resnet=False),
    Row("resnet", "ResNet-50 encoder, linear head (Adam)", "resnet50"),
    Row("iterative", "+ iterative regressor (5 it.)", "iterative"),
    Row("adversarial", "+ adversarial prior", "adversarial"),
    Row("resample", "+ resampling 0.5", "resample"),
    Row("resnet18", "ResNet-18 encoder, linear head (SGD)", "resnet18"),
)
DEFAULT_ROWS = ("linear_default", "resnet", "iterative", "adversarial", "resample")
COLUMNS = (
    ("v2v_l2", "val v2v L2 (m^2)", "{:.5f}"),
    ("mpjpe", "MPJPE (mm)", "{:.1f}"),
    ("pa_mpjpe", "PA-MPJPE (mm)", "{:.1f}"),
    ("pve", "PVE (mm)", "{:.1f}"),
    ("pose_outside_limits", "outside limits", "{:.1%}"),
)


def common_overrides(args) -> list[tuple[str, str]]:
    """Synthetic data and the shared budget, for every row."""
    data_dir = os.path.join(os.path.abspath(args.root), f"synthetic_{args.img_size}px_{args.num_synthetic}")
    steps = args.steps
    return [
        ("data.source", "folder"),
        ("data.dir", data_dir),
        ("data.annotations", "annotations.npz"),
        ("data.image_root", data_dir),
        ("data.train_split", "train"),
        ("data.val_split", "validation"),
        ("data.joint_regressor", ""),
        ("data.synthetic.num", str(args.num_synthetic)),
        ("data.synthetic.seed", str(args.seed)),
        ("data.img_size", str(args.img_size)),
        ("data.batch_size", str(args.batch_size)),
        ("data.eval_batch_size", str(args.batch_size)),
        ("seed", str(args.seed)),
        ("train.num_steps", str(steps)),
        ("train.eval_every", str(steps)),
        ("train.checkpoint_every", "0"),
        ("train.image_every", "0"),
        ("train.log_every", str(max(1, min(100, steps // 20)))),
        ("train.progress_bar", "False"),
        ("early_stopping.patience", "0"),
        ("optim.plateau.enabled", "False"),
    ]


def row_overrides(row: Row, args) -> list[tuple[str, str]]:
    over = common_overrides(args)
    if row.resnet and args.resnet_width:
        over.append(("model.width", str(args.resnet_width)))
    if row.resnet and args.resnet_depth:
        over.append(("model.depth", str(args.resnet_depth)))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set: expected key=value, found {item!r}")
        over.append((key.strip(), value.strip()))
    return over


def train_command(row: Row, workdir: str, args) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "hmr_jax.train",
        f"--config={os.path.join(REPO, 'configs', 'table1.py')}:{row.config}",
        f"--workdir={workdir}",
    ]
    return cmd + [f"--config.{k}={v}" for k, v in row_overrides(row, args)]


def eval_command(workdir: str, out: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hmr_jax.evaluate",
        f"--workdir={workdir}",
        "--split=validation",
        "--checkpoint=latest",
        f"--out={out}",
    ]


def _run(cmd: list[str], log_path: str) -> tuple[int, float]:
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return proc.returncode, time.time() - t0


def _tail(path: str, n: int = 15) -> str:
    with open(path) as f:
        return "".join(f.readlines()[-n:])


def run_row(row: Row, args) -> dict:
    workdir = os.path.join(os.path.abspath(args.root), row.name)
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, "eval", "ablation_validation.json")
    result = {
        "row": row.name,
        "label": row.label,
        "config": f"configs/table1.py:{row.config}",
        "overrides": dict(row_overrides(row, args)),
        "workdir": workdir,
    }
    cmd = train_command(row, workdir, args)
    print(f"[{row.name}] training: {' '.join(cmd[:4])} ... (log: {workdir}/train.log)", flush=True)
    rc, secs = _run(cmd, os.path.join(workdir, "train.log"))
    result["train_seconds"] = round(secs, 1)
    if rc != 0:
        log = os.path.join(workdir, "train.log")
        result["error"] = f"training failed (exit {rc}); end of {log}:\n{_tail(log)}"
        print(f"[{row.name}] {result['error']}", file=sys.stderr, flush=True)
        return result
    print(f"[{row.name}] evaluating (log: {workdir}/eval.log)", flush=True)
    rc, secs = _run(eval_command(workdir, out), os.path.join(workdir, "eval.log"))
    result["eval_seconds"] = round(secs, 1)
    if rc != 0:
        log = os.path.join(workdir, "eval.log")
        result["error"] = f"evaluation failed (exit {rc}); end of {log}:\n{_tail(log)}"
        print(f"[{row.name}] {result['error']}", file=sys.stderr, flush=True)
        return result
    with open(out) as f:
        report = json.load(f)
    result.update(
        step=report["checkpoint"]["step"],
        model=report["model"],
        baseline=report["baseline"],
        train_mean_baseline=report.get("train_mean_baseline"),
        eval_json=out,
    )
    return result


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def markdown_table(results: list[dict], args) -> str:
    head = "| Row | Config | " + " | ".join(c[1] for c in COLUMNS) + " | train s |"
    lines = [
        f"Ablation (Table 1 rows) on the synthetic set: {args.steps} steps, batch {args.batch_size}, "
        f"{args.img_size} px crops, {args.num_synthetic} samples; validation split, latest checkpoint.",
        "",
        head,
        "|" + "---|" * (len(COLUMNS) + 3),
    ]
    baseline = train_mean = None
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['label']} | {r['config']} | "
                + " | ".join("failed" for _ in COLUMNS)
                + f" | {r.get('train_seconds', '-')} |"
            )
            continue
        baseline = baseline or r["baseline"]
        train_mean = train_mean or r.get("train_mean_baseline")
        lines.append(
            f"| {r['label']} | {r['config']} | "
            + " | ".join(_cell(r["model"][k], fmt) for k, _, fmt in COLUMNS)
            + f" | {r['train_seconds']} |"
        )
    if baseline is not None:
        lines.append(
            "| Mean pose and shape (no training) | - | "
            + " | ".join(_cell(baseline[k], fmt) for k, _, fmt in COLUMNS)
            + " | - |"
        )
    if train_mean is not None:
        lines.append(
            "| Training-set mean pose and shape | - | "
            + " | ".join(_cell(train_mean[k], fmt) for k, _, fmt in COLUMNS)
            + " | - |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", required=True, help="Folder of the runs (one workdir per row) and the tables.")
    p.add_argument("--steps", type=int, default=3000, help="Training steps of every row (the shared budget).")
    p.add_argument("--img-size", type=int, default=64, help="Crop size (px).")
    p.add_argument("--batch-size", type=int, default=32, help="Global batch (training and evaluation).")
    p.add_argument("--num-synthetic", type=int, default=3000, help="Synthetic samples (generated once).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rows", default=",".join(DEFAULT_ROWS), help=f"Comma-separated rows among {[r.name for r in ROWS]}."
    )
    p.add_argument(
        "--resnet-width",
        type=int,
        default=16,
        help="Encoder width of the ResNet rows (0 = the configs' own, 64); the default row keeps 16.",
    )
    p.add_argument("--resnet-depth", type=int, default=0, help="Encoder depth of the ResNet rows (0 = the configs').")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra config override for every row (repeatable), e.g. --set=model.hidden='(256,256)'.",
    )
    p.add_argument("--dry-run", action="store_true", help="Print the commands only.")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    known = {r.name: r for r in ROWS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        p.error(f"--rows: expected names among {list(known)}, found unknown {unknown or names}")
    if args.steps < 1 or args.batch_size < 1 or args.num_synthetic < 2 or args.img_size < 16:
        p.error("--steps and --batch-size must be >= 1, --num-synthetic >= 2, --img-size >= 16")
    args.row_list = [known[n] for n in names]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    if args.dry_run:
        for row in args.row_list:
            wd = os.path.join(root, row.name)
            print(" ".join(train_command(row, wd, args)))
            print(" ".join(eval_command(wd, os.path.join(wd, "eval", "ablation_validation.json"))))
        return 0
    t0 = time.time()
    results = [run_row(row, args) for row in args.row_list]
    table = markdown_table(results, args)
    with open(os.path.join(root, "ablation.md"), "w") as f:
        f.write(table)
    summary = {
        "budget": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "img_size": args.img_size,
            "num_synthetic": args.num_synthetic,
            "seed": args.seed,
            "resnet_width": args.resnet_width,
            "resnet_depth": args.resnet_depth,
            "set": args.set,
        },
        "rows": results,
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(root, "ablation.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(table)
    print(f"written: {os.path.join(root, 'ablation.md')}, {os.path.join(root, 'ablation.json')}")
    failed = [r["row"] for r in results if "error" in r]
    if failed:
        print(f"FAILED rows: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

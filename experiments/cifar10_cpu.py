"""CPU-scale reproduction of the paper's comparison on real CIFAR-10 (issue: does PKKD close the ANN-CNN gap?).

ResNet-20 on a fixed per-class subset of the CIFAR-10 training images, five methods x several seeds:

| method               | what it trains                                                           |
|----------------------|--------------------------------------------------------------------------|
| `cnn`                | the CNN alone                                                            |
| `ann`                | a plain AdderNet                                                         |
| `pkkd`               | PKKD: CNN teacher and ANN student trained together (the full method)     |
| `pkkd_no_kernel`     | PKKD matching scaled raw distances instead of kernel values              |
| `pkkd_fixed_teacher` | PKKD with the same seed's trained `cnn` run as a fixed, frozen teacher   |

Every run logs the accuracy on a fixed test subset each epoch (the curves) and ends with a test on all 10,000 test
images (the table). Runs are resumable: a finished run is skipped, an interrupted one resumes from its
``last.ckpt``. ``summarize`` writes the table and the plot. Results live in ``experiments/results/cifar10_cpu``
and are committed (``result.json``, ``log/metrics.csv`` and the CNN's ``student.pt``, which the fixed-teacher
ablation of the same seed loads); checkpoints are not.

Usage::

    python experiments/cifar10_cpu.py run        # all methods and seeds (about an hour on 2 cores)
    python experiments/cifar10_cpu.py summarize  # docs/results_cifar10_cpu.md + docs/figures/cifar10_cpu_curves.png

    # the main methods again with precise BatchNorm before every evaluation (PreciseBatchNorm, 10 batches)
    python experiments/cifar10_cpu.py run --out experiments/results/cifar10_cpu_precise_bn \\
        --methods cnn ann pkkd --precise-bn-batches 10
    python experiments/cifar10_cpu.py summarize --out experiments/results/cifar10_cpu_precise_bn
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pkkd_lightning import PKKDModule
from pkkd_lightning.analysis import read_metrics_csv
from pkkd_lightning.callbacks import PreciseBatchNorm, ProgressiveSchedule, export_student
from pkkd_lightning.data import CIFAR10DataModule

REPO = Path(__file__).resolve().parents[1]
METHODS = ("cnn", "ann", "pkkd", "pkkd_no_kernel", "pkkd_fixed_teacher")
MAIN_METHODS = ("cnn", "ann", "pkkd")


def module_for(method: str, out: Path, seed: int, lr: float) -> PKKDModule:
    """The PKKDModule of one method (a fixed teacher comes from the same seed's ``cnn`` run)."""
    common = {"arch": "resnet20", "num_classes": 10, "lr": lr}
    if method in ("cnn", "ann", "pkkd"):
        return PKKDModule(mode=method, **common)
    if method == "pkkd_no_kernel":
        return PKKDModule(mode="pkkd", use_kernel=False, **common)
    teacher = out / f"cnn_seed{seed}" / "student.pt"
    if not teacher.exists():
        raise FileNotFoundError(f"{method} needs the cnn run of seed {seed} first ({teacher})")
    return PKKDModule(mode="pkkd", progressive=False, teacher_checkpoint=str(teacher), **common)


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and test one (method, seed); resumes from ``last.ckpt`` and skips finished runs."""
    run_dir = args.out / f"{method}_seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    L.seed_everything(seed, verbose=False)
    data_kwargs = {"data_dir": args.data_dir, "batch_size": args.batch_size, "num_workers": args.num_workers}
    data = CIFAR10DataModule(train_per_class=args.train_per_class, test_per_class=args.curve_per_class, **data_kwargs)
    module = module_for(method, args.out, seed, args.lr)
    last = run_dir / "checkpoints" / "last.ckpt"
    callbacks = [
        ModelCheckpoint(run_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False),
        ProgressiveSchedule("beta", "linear", 0.0, 0.5),
    ]
    if args.precise_bn_batches:
        callbacks.append(PreciseBatchNorm(args.precise_bn_batches))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=CSVLogger(run_dir, name="", version="log"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.time()
    trainer.fit(module, data, ckpt_path=str(last) if last.exists() else None)
    train_seconds = time.time() - start
    full_test = CIFAR10DataModule(**data_kwargs)
    metrics = trainer.test(module, full_test, verbose=False)[0]
    if method == "cnn":
        export_student(module, run_dir / "student.pt")  # the fixed teacher of pkkd_fixed_teacher
    result = {
        "method": method,
        "seed": seed,
        "student_acc1": metrics["test/student_acc1"],
        "teacher_acc1": metrics.get("test/teacher_acc1"),
        "precise_bn_batches": args.precise_bn_batches,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - start,
    }
    result_path.write_text(json.dumps(result, indent=2))
    return result


def summarize(args: argparse.Namespace) -> None:
    """Write the results table (mean ± std over seeds) and the accuracy-over-epochs plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method = {
        method: [json.loads(p.read_text()) for p in sorted(args.out.glob(f"{method}_seed*/result.json"))]
        for method in METHODS
    }
    rows = []
    for method, results in by_method.items():
        if not results:
            continue
        acc = [100 * r["student_acc1"] for r in results]
        minutes = [r["wall_seconds"] / 60 for r in results]
        spread = f"{statistics.stdev(acc):.2f}" if len(acc) > 1 else "n/a (one seed)"
        rows.append(
            f"| {method} | {statistics.mean(acc):.2f} ± {spread} | {len(acc)} | "
            f"{', '.join(f'{a:.2f}' for a in acc)} | {statistics.mean(minutes):.1f} |"
        )
    table = [
        "| method | test top-1 % (mean ± std) | seeds | per seed | minutes per run |",
        "|---|---|---|---|---|",
        *rows,
    ]
    (REPO / "docs").mkdir(exist_ok=True)
    (REPO / "docs" / f"results_{args.out.name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))

    figure, axis = plt.subplots(figsize=(6, 4))
    for method in MAIN_METHODS:
        curves = []
        for log in sorted(args.out.glob(f"{method}_seed*/log/metrics.csv")):
            points = read_metrics_csv(log).get("val/student_acc1", [])
            curves.append([100 * p.value for p in sorted(points, key=lambda p: p.epoch)])
        if curves:
            length = min(len(c) for c in curves)
            mean = [statistics.mean(c[i] for c in curves) for i in range(length)]
            axis.plot(range(1, length + 1), mean, marker="o", label=f"{method} (mean of {len(curves)} seeds)")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"test top-1 % ({args.curve_per_class} images per class)")
    precise_bn = max((r.get("precise_bn_batches", 0) for rs in by_method.values() for r in rs), default=0)
    title = "ResNet-20, CIFAR-10 subset, 2 CPU cores"
    axis.set_title(title + (f", precise BN ({precise_bn} batches)" if precise_bn else ""))
    axis.legend()
    axis.grid(alpha=0.3)
    figures = REPO / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    figure.savefig(figures / f"{args.out.name}_curves.png", dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "summarize"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-jpeg")
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "cifar10_cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-per-class", type=int, default=160)
    parser.add_argument("--curve-per-class", type=int, default=50, help="test images per class for the curves")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--precise-bn-batches", type=int, default=0, help="re-estimate BatchNorm from N batches per eval (0: off)"
    )
    args = parser.parse_args(argv)
    if args.command == "summarize":
        summarize(args)
        return
    for seed in args.seeds:
        for method in args.methods:
            result = run_one(method, seed, args)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

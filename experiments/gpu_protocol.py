"""Full CIFAR-10 on one GPU in about 8 minutes: CNN, plain ANN and PKKD ResNet-20 trained at the same time.

Three ``python cli.py fit`` processes share the GPU (``experiments/configs/cifar10_gpu.yaml``: the whole training
set, batch 256, SGD lr 0.1 with a cosine schedule to zero, data in GPU-side augmentation), then each tests its
final weights on the 10,000 test images. Everything lands in the output folder: the runs' logs, ``result.json``
per method, ``summary.md`` and ``nvidia-smi.txt``.

How long: the measured H100 step times at batch 256 (docs/benchmarks.md) are 12.8 ms (CNN), 18.6 ms (ANN) and
34.0 ms (PKKD), 65 ms for the three; 195 steps per epoch make about 13 s per epoch of all three if the GPU runs
them one after the other (running them concurrently fills the gaps between small kernels, so it should not be
slower). 25 epochs are 5.3 minutes of training, plus about 1.5 minutes for start-up (Triton compilation, decoding
the data) and tests: about 7 minutes, inside the 8-minute budget with room to spare.

The data travels to the GPU machine as one file (the shared folder does not travel; 60,000 small files in a tar
would exceed the 64 MiB limit, their JPEG bytes alone are 55 MB)::

    python -m experiments.gpu_protocol pack .gpu_data/cifar10-jpeg.pack     # here, once
    # on the device: carry .gpu_data, then
    python -m experiments.gpu_protocol run $OUT --pack .gpu_data/cifar10-jpeg.pack

``--tiny`` runs the same three processes on the CPU in about a minute (a test): 16 images per class, 1 epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from experiments.runner import SHARED_CIFAR10, Run, run_all
from experiments.summary import final_test

CONFIG = "experiments/configs/cifar10_gpu.yaml"
METHODS = {"cnn": ("--model.mode", "cnn"), "ann": ("--model.mode", "ann"), "pkkd": ("--model.mode", "pkkd")}
TINY = (
    *("--trainer.accelerator", "cpu", "--data.init_args.train_per_class", "16", "--data.init_args.test_per_class"),
    *("4", "--data.init_args.batch_size", "32", "--data.init_args.num_workers", "0"),
    *("--data.init_args.persistent_workers", "false", "--trainer.check_val_every_n_epoch", "1"),
)


def pack(data_dir: Path, target: Path) -> Path:
    """Write every file of an ImageFolder tree (``train/`` and ``test/``) into one file: ``{relative path: bytes}``."""
    files = {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.glob("*/*/*")) if p.is_file()}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(files, target)
    return target


def unpack(archive: Path, data_dir: Path) -> Path:
    """Recreate the ImageFolder tree a :func:`pack` file holds under ``data_dir``."""
    for relative, content in torch.load(archive, weights_only=True).items():
        path = data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return data_dir


def runs(data_dir: Path, epochs: int, tiny: bool) -> list[Run]:
    """The three methods on seed 0, each with its own output folder."""
    common = ("--data.init_args.data_dir", str(data_dir), "--trainer.max_epochs", str(epochs), *(TINY if tiny else ()))
    return [Run(method, CONFIG, (*args, *common), seed=0) for method, args in METHODS.items()]


def summarize(out: Path, results: list[dict], wall_seconds: float) -> str:
    """``summary.md``: final test accuracy, the teacher's, and the wall-clock of the whole protocol."""
    lines = ["| method | test top-1 % (final weights) | teacher test % | fit seconds |", "|---|---|---|---|"]
    for result in results:
        teacher = f"{final_test(result, 'teacher'):.2f}" if "teacher_acc1" in result["final"] else "-"
        lines.append(
            f"| {result['name']} | {final_test(result):.2f} | {teacher} | {result['fit_seconds_last_part']:.0f} |"
        )
    lines.append(f"\nWhole protocol (three runs at once, tests included): {wall_seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    packing = sub.add_parser("pack", help="pack the ImageFolder tree into one file that can travel")
    packing.add_argument("target", type=Path)
    packing.add_argument("--data-dir", type=Path, default=SHARED_CIFAR10)
    running = sub.add_parser("run", help="train and test the three methods at once")
    running.add_argument("out", type=Path)
    running.add_argument("--data-dir", type=Path, default=SHARED_CIFAR10)
    running.add_argument("--pack", type=Path, help="a file made by `pack`, unpacked into a temporary folder first")
    running.add_argument("--epochs", type=int, default=25)
    running.add_argument("--threads", type=int, default=4, help="CPU threads per process")
    running.add_argument("--tiny", action="store_true", help="a CPU smoke run: 16 images per class, 1 epoch")
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(pack(args.data_dir, args.target))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
        (args.out / "nvidia-smi.txt").write_text(smi.stdout)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = unpack(args.pack, Path(tmp) / "cifar10") if args.pack else args.data_dir
        began = time.time()
        results = run_all(runs(data_dir, 1 if args.tiny else args.epochs, args.tiny), args.out, 3, args.threads)
        wall = time.time() - began
    table = summarize(args.out, results, wall)
    (args.out / "summary.md").write_text(table)
    (args.out / "summary.json").write_text(json.dumps({"wall_seconds": wall, "results": results}, indent=2))
    print(table)


if __name__ == "__main__":
    main()

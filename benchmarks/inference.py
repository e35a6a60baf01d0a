"""Inference throughput on the CPU: the CNN, the ANN on the package's kernels and the ANN's ONNX export, side by side.

Images per second of an eval-mode forward pass at each batch size, for

* ``cnn``: the CNN twin in PyTorch;
* ``ann-native``: the AdderNet with the package's adder kernels (``backend="auto"``: the C kernels on the CPU);
* ``ann-onnx``: the AdderNet exported by ``pkkd_lightning.tools.export`` (adder layers as standard ONNX operators,
  :mod:`pkkd_lightning.ops.portable`) run by onnxruntime;
* ``cnn-onnx``: the CNN exported the same way, which separates onnxruntime's own speed from that of the adder graph.

The methods run interleaved (one timed call of each in turn, ``--repeats`` rounds), so a drifting machine affects
them alike; the median over rounds is reported with each method's ratio to ``cnn``. onnxruntime gets as many
intra-op threads as PyTorch has (``OMP_NUM_THREADS``). The networks are freshly built, with BatchNorm statistics
gathered on random images so that their activations have a trained network's scale (speed does not depend on the
weights).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/inference.py                 # resnet20, 32x32, batches 1 and 64
    python benchmarks/inference.py --arch resnet32 --batches 1 16 64 --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from pkkd_lightning.models import build_model
from pkkd_lightning.ops.portable import portable_copy
from pkkd_lightning.tools.export import export_onnx

METHODS = ("cnn", "ann-native", "ann-onnx", "cnn-onnx")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@torch.no_grad()
def calibrated(model: nn.Module, size: int) -> nn.Module:
    """``model`` in eval mode after BatchNorm statistics were gathered on a few random batches."""
    model.train()
    for _ in range(3):
        model(torch.randn(32, 3, size, size))
    return model.eval()


def onnx_session(model: nn.Module, size: int, folder: Path, name: str) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` exported as the export tool does."""
    path = folder / f"{name}.onnx"
    export_onnx(portable_copy(model), torch.zeros(2, 3, size, size), path, "{}")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runners(cnn: nn.Module, ann: nn.Module, size: int, folder: Path) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Method name -> a function from a float32 batch to its logits."""
    sessions = {"ann-onnx": onnx_session(ann, size, folder, "ann"), "cnn-onnx": onnx_session(cnn, size, folder, "cnn")}

    def torch_runner(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run

    def onnx_runner(session: ort.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: session.run(None, {"input": x})[0]

    return {
        "cnn": torch_runner(cnn),
        "ann-native": torch_runner(ann),
        "ann-onnx": onnx_runner(sessions["ann-onnx"]),
        "cnn-onnx": onnx_runner(sessions["cnn-onnx"]),
    }


def images_per_second(
    runs: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray, repeats: int, min_seconds: float
) -> dict[str, float]:
    """Median images per second of each runner over ``repeats`` interleaved rounds; a round calls a runner as often
    as it takes to fill ``min_seconds`` (at least once), so that small batches are not timer-bound."""
    calls = {}
    for name, run in runs.items():  # warm-up, and the number of calls per round
        run(x)
        start = time.perf_counter()
        run(x)
        calls[name] = max(1, round(min_seconds / (time.perf_counter() - start)))
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                run(x)
            rates[name].append(calls[name] * len(x) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet20", help="an architecture spec, as model.arch accepts it")
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.2, help="least time of one timed round per method")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cnn = calibrated(build_model(args.arch, "conv"), args.size)
    ann = calibrated(build_model(args.arch, "adder"), args.size)
    print(f"CPU: {cpu_model()}; torch {torch.__version__} threads {torch.get_num_threads()}; onnxruntime "
          f"{ort.__version__} intra-op threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{args.arch}, {args.size}x{args.size}, median of {args.repeats} interleaved rounds")
    with tempfile.TemporaryDirectory() as folder:
        runs = runners(cnn, ann, args.size, Path(folder))
        check = np.random.default_rng(0).standard_normal((4, 3, args.size, args.size), dtype=np.float32)
        native, exported = runs["ann-native"](check), runs["ann-onnx"](check)
        error = np.abs(exported - native).max() / np.abs(native).max()
        print(f"ann-onnx vs ann-native logits: max relative error {error:.1e}")
        print(f"{'batch':>5} {'method':<11} {'images/s':>10} {'vs cnn':>8}")
        for batch in args.batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, args.size, args.size), dtype=np.float32)
            rates = images_per_second(runs, x, args.repeats, args.min_seconds)
            for name in METHODS:
                print(f"{batch:>5} {name:<11} {rates[name]:>10.1f} {rates[name] / rates['cnn']:>8.3f}")
            print(
                f"{batch:>5} ann-native / ann-onnx: {rates['ann-native'] / rates['ann-onnx']:.1f}x faster; "
                f"cnn / ann-native: {rates['cnn'] / rates['ann-native']:.1f}x faster"
            )


if __name__ == "__main__":
    main()

"""This checkout's native adder kernels against another checkout's, interleaved in one process.

For kernel work: ``adder_op.py`` times one build, and on a shared machine two such runs drift apart by more than
a kernel change is worth. Here every round times, at each layer shape, conv2d, this checkout's ``native`` backend
and the baseline checkout's, one after the other, forward and forward+backward; medians over the rounds are
printed as ratios to conv2d. The baseline's ``pkkd_lightning/ops/native_backend.py`` is loaded from its own folder
(its C sources with it) next to this checkout's package.

Usage::

    git worktree add /tmp/baseline <commit>
    OMP_NUM_THREADS=1 python benchmarks/compare_kernels.py /tmp/baseline --shapes resnet20 small
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from adder_op import SHAPES, LayerShape

from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.native_backend import NativeBackend, kernel_build


def load_baseline_backend(checkout: Path) -> type:
    """The ``NativeBackend`` class of the checkout at ``checkout``, imported under another module name."""
    path = checkout / "pkkd_lightning" / "ops" / "native_backend.py"
    if not path.is_file():
        raise SystemExit(f"baseline: no {path}; give the folder of a pkkd-lightning checkout")
    spec = importlib.util.spec_from_file_location("baseline_native_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NativeBackend


def layer_steps(shape: LayerShape, backends: dict[str, object], batch: int) -> dict[str, Callable[[], None]]:
    """Forward (``<name> fwd``) and forward+backward (``<name> f+b``) of conv2d and each backend at one shape."""
    gen = torch.Generator().manual_seed(0)
    k, s, p, g = shape.kernel_size, shape.stride, shape.padding, shape.groups
    x = torch.randn(batch, shape.in_channels, shape.size, shape.size, generator=gen)
    w = torch.randn(shape.out_channels, shape.in_channels // g, k, k, generator=gen)
    geom = AdderGeometry((k, k), (s, s), (p, p), (1, 1))
    grad = torch.randn_like(F.conv2d(x, w, None, s, p, 1, g))
    steps = {
        "conv2d fwd": lambda: F.conv2d(x, w, None, s, p, 1, g),
        "conv2d f+b": lambda: (
            F.conv2d(x, w, None, s, p, 1, g),
            torch.ops.aten.convolution_backward(
                grad, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], g, [True, True, False]
            ),
        ),  # fmt: skip
    }
    for name, backend in backends.items():
        steps[f"{name} fwd"] = lambda b=backend: b.forward(x, w, geom, None)
        steps[f"{name} f+b"] = lambda b=backend: (
            b.forward(x, w, geom, None),
            b.backward(grad, x, w, geom, None, True, True),
        )
    return steps


def interleaved_medians(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each step over ``rounds`` rounds that take every step in turn (after one warm-up round)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(rounds + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("baseline", type=Path, help="folder of the checkout to compare against")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["resnet20"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    baseline = load_baseline_backend(args.baseline)
    print(f"torch {torch.__version__}, {kernel_build()}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"median of {args.rounds} interleaved rounds; ratios to conv2d")  # fmt: skip
    print(f"{'shape':<18} {'this fwd':>9} {'base fwd':>9} {'this f+b':>9} {'base f+b':>9} {'f+b speed-up':>13}")
    for shape in (shape for name in args.shapes for shape in SHAPES[name]):
        backends = {"this": NativeBackend(shape.groups)}
        if shape.groups == 1:
            backends["base"] = baseline()
        elif "groups" in inspect.signature(baseline).parameters:  # earlier checkouts had no grouped kernels
            backends["base"] = baseline(shape.groups)
        t = interleaved_medians(layer_steps(shape, backends, args.batch), args.rounds)
        ratio = {key: t[key] / t[f"conv2d {key.split()[1]}"] for key in t if not key.startswith("conv2d")}
        base = [f"{ratio[f'base {m}']:9.2f}" if "base" in backends else f"{'-':>9}" for m in ("fwd", "f+b")]
        speedup = f"{t['base f+b'] / t['this f+b']:12.2f}x" if "base" in backends else f"{'-':>13}"
        print(f"{shape.name:<18} {ratio['this fwd']:9.2f} {base[0]} {ratio['this f+b']:9.2f} {base[1]} {speedup}")


if __name__ == "__main__":
    main()

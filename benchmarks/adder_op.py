"""Adder layer vs conv2d: time and peak memory at the ResNet-20 layer shapes (and others), side by side in one run.

Every number is printed as a ratio to ``conv2d`` measured in the same process, because absolute times on a
shared machine drift; the forward+backward ratio also against its bound, ``FLOOR_FWD_BWD``. Peak memory is the
growth of the process's peak resident set (CPU, Linux: the peak is reset through ``/proc/self/clear_refs`` before
each measurement, and glibc is told to return large blocks to the system so that freed memory is not silently
reused) or ``torch.cuda.max_memory_allocated`` (CUDA).

Usage::

    python benchmarks/adder_op.py                 # CPU, batch 64, all methods (``native`` CPU-, ``triton`` GPU-only)
    python benchmarks/adder_op.py --device cuda   # on a GPU
    python benchmarks/adder_op.py --methods conv2d fused --batch 128
    python benchmarks/adder_op.py --shapes small grouped --methods conv2d native   # timm-like late and depthwise
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pkkd_lightning.ops import adder2d
from pkkd_lightning.ops.native_backend import kernel_build

METHODS = ("conv2d", "reference", "unfold", "fused", "native", "triton")
#: Adder forward+backward / conv2d forward+backward at conv's efficiency. Per multiply-accumulate of a convolution
#: (one fused multiply-add), the adder forward needs a min and an add (``|x - f| = x + f - 2 min(x, f)``, the sums
#: of patches and filters taken once), the input gradient ``G * HardTanh(F - X)`` a subtract, a max, a min and a
#: multiply-add, and the weight gradient is a convolution's (eq. 5): (2 + 4 + 1) / 3 = 2.33.
FLOOR_FWD_BWD = 7 / 3


@dataclass(frozen=True)
class LayerShape:
    name: str
    in_channels: int
    out_channels: int
    size: int
    kernel_size: int
    stride: int
    padding: int
    groups: int = 1


SHAPES = {
    "resnet20": (
        LayerShape("16ch@32x32 3x3", 16, 16, 32, 3, 1, 1),
        LayerShape("32ch@16x16 3x3", 32, 32, 16, 3, 1, 1),
        LayerShape("64ch@8x8 3x3", 64, 64, 8, 3, 1, 1),
        LayerShape("16->32 1x1 s2", 16, 32, 32, 1, 2, 0),
    ),
    # the late stages of ResNet/MobileNet-style networks on 32x32 images: maps of 4x4 down to 1x1
    "small": (
        LayerShape("256ch@4x4 3x3", 256, 256, 4, 3, 1, 1),
        LayerShape("512ch@2x2 3x3", 512, 512, 2, 3, 1, 1),
        LayerShape("512->1024 1x1@1", 512, 1024, 1, 1, 1, 0),
    ),
    "grouped": (
        LayerShape("dw 96ch@16x16", 96, 96, 16, 3, 1, 1, groups=96),
        LayerShape("dw 384ch@8x8", 384, 384, 8, 3, 1, 1, groups=384),
        LayerShape("g4 64ch@8x8", 64, 64, 8, 3, 1, 1, groups=4),
    ),
}


def layer_fn(method: str, shape: LayerShape) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The layer as a function of (input, weight) for one method."""
    if method == "conv2d":
        return lambda x, w: F.conv2d(x, w, None, shape.stride, shape.padding, 1, shape.groups)
    return lambda x, w: adder2d(x, w, None, shape.stride, shape.padding, 1, shape.groups, backend=method)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``step`` in milliseconds."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024


def peak_memory(step: Callable[[], None], device: torch.device) -> int:
    """Bytes the call needs on top of what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _peak_rss_bytes()
    step()
    return _peak_rss_bytes() - before


def measure(method: str, shape: LayerShape, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Forward time, forward+backward time and forward+backward peak memory of one method at one shape."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, shape.in_channels, shape.size, shape.size, generator=gen).to(device)
    w = torch.randn(
        shape.out_channels, shape.in_channels // shape.groups, shape.kernel_size, shape.kernel_size, generator=gen
    )
    w = w.to(device)
    fn = layer_fn(method, shape)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

    def forward() -> None:
        with torch.no_grad():
            fn(x, w)

    def forward_backward() -> None:
        out = fn(xg, wg)
        out.backward(torch.ones_like(out))
        xg.grad = wg.grad = None

    slow = method == "reference"
    reps, warm = (max(2, repeats // 5), 1) if slow else (repeats, 3)
    return {
        "fwd_ms": time_call(forward, device, reps, warm),
        "fwdbwd_ms": time_call(forward_backward, device, reps, warm),
        "mem_bytes": peak_memory(forward_backward, device),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="default: every method the device runs")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["resnet20"], help="layer shape sets")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu_only, cpu_only = ("triton",), ("native",)
    requested = args.methods or [m for m in METHODS if m not in (gpu_only if device.type == "cpu" else cpu_only)]
    methods = ["conv2d"] + [m for m in requested if m != "conv2d"]
    build = kernel_build() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"torch {torch.__version__}, {build}, threads {torch.get_num_threads()}, batch {args.batch}")
    print(f"f+b/floor: forward+backward / conv2d against the bound {FLOOR_FWD_BWD:.2f} (1.00 = at the bound)")
    print(f"{'shape':<16} {'method':<10} {'fwd ms':>9} {'fwd/conv':>9} {'f+b ms':>9} {'f+b/conv':>9} "
          f"{'f+b/floor':>9} {'peak MiB':>9} {'mem/conv':>9}")  # fmt: skip
    for shape in (shape for name in args.shapes for shape in SHAPES[name]):
        results = {m: measure(m, shape, args.batch, device, args.repeats) for m in methods}
        base = results["conv2d"]
        for method, r in results.items():
            fwd_bwd = r["fwdbwd_ms"] / base["fwdbwd_ms"]
            floor = "" if method == "conv2d" else f"{fwd_bwd / FLOOR_FWD_BWD:.2f}"
            print(
                f"{shape.name:<16} {method:<10} {r['fwd_ms']:9.2f} {r['fwd_ms'] / base['fwd_ms']:9.2f} "
                f"{r['fwdbwd_ms']:9.2f} {fwd_bwd:9.2f} {floor:>9} "
                f"{r['mem_bytes'] / 2**20:9.1f} {r['mem_bytes'] / max(base['mem_bytes'], 1):9.2f}"
            )
        if "reference" in results:
            speedups = ", ".join(
                f"{m} {results['reference']['fwdbwd_ms'] / r['fwdbwd_ms']:.1f}x"
                for m, r in results.items()
                if m not in ("conv2d", "reference")
            )
            print(f"{shape.name:<16} forward+backward speed-up over the reference: {speedups}")


if __name__ == "__main__":
    # Freed large blocks must go back to the system, or the resident-set peak under-counts reused memory.
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()

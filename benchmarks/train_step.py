"""Training-step time of the CNN, the plain ANN and the PKKD pair, side by side in one run, for any architecture.

Prints milliseconds per optimisation step (forward, backward, AdderNet rescaling, SGD step) and each as a ratio
to the CNN's step. The steps of all modes are interleaved (one step of each in turn) and each mode's median is
taken, so a machine that slows down mid-run slows every mode alike. Beside the ratios: the PKKD overhead,
``PKKD / CNN - (1 + ANN / CNN)``, the time PKKD costs beyond training the two networks it consists of.

Usage::

    python benchmarks/train_step.py                      # CPU, batch 64, 32x32
    python benchmarks/train_step.py --device cuda --batch 256
    python benchmarks/train_step.py --device cuda --backends triton fused   # adder backends side by side
    python benchmarks/train_step.py --archs timm:resnet10t timm:mobilenetv3_small_050 timm:efficientnet_b0
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pkkd_lightning import PKKDModule
from pkkd_lightning.ops import BACKENDS
from pkkd_lightning.ops.native_backend import kernel_build

ADDER_MODES = ("ann", "pkkd")


def training_step(
    arch: str, mode: str, backend: str, device: torch.device, batch: int, size: int, bf16: bool
) -> Callable[[], None]:
    """One training step of ``mode`` on ``arch`` with adder layers run by ``backend``, as a function."""
    torch.manual_seed(0)
    module = PKKDModule(arch, 10, mode=mode, adder_backend=backend).to(device)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.compute_losses(x, y)["loss"]
        loss.backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{mode}: loss became {loss.item()}")

    return step


def interleaved_medians(steps: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each step, the steps taken in turn (three warm-up rounds first)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(3 + repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (adder layers stay float32)")
    parser.add_argument("--backends", nargs="+", default=["auto"], choices=BACKENDS, help="adder backends to time")
    parser.add_argument("--archs", nargs="+", default=["resnet20"], help="architectures, as model.arch takes them")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    build = kernel_build() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"torch {torch.__version__}, {build}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.size}x{args.size}, bf16 {args.bf16}, median of {args.repeats} interleaved steps")  # fmt: skip
    shape = (device, args.batch, args.size, args.bf16)
    for arch in args.archs:
        steps = {"cnn": training_step(arch, "cnn", "auto", *shape)}
        for backend in args.backends:
            steps.update({f"{mode}[{backend}]": training_step(arch, mode, backend, *shape) for mode in ADDER_MODES})
        results = interleaved_medians(steps, device, args.repeats)
        for name, seconds in results.items():
            print(f"{arch:<28} {name:<14} {seconds * 1e3:9.1f} ms/step  {seconds / results['cnn']:6.2f}x cnn")
        for backend in args.backends:
            ann, pkkd = (results[f"{mode}[{backend}]"] / results["cnn"] for mode in ADDER_MODES)
            print(f"{arch:<28} pkkd[{backend}] overhead beyond CNN + ANN: {pkkd - 1 - ann:+.2f} CNN steps")


if __name__ == "__main__":
    main()

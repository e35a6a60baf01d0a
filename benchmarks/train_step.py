"""Training-step time of the CNN, the plain ANN and the PKKD pair, side by side in one run, for any architecture.

Prints seconds per optimisation step (forward, backward, AdderNet rescaling, SGD step) and each as a ratio to the
CNN's step measured in the same process.

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

import torch

from pkkd_lightning import PKKDModule
from pkkd_lightning.ops import BACKENDS

ADDER_MODES = ("ann", "pkkd")


def step_seconds(
    arch: str, mode: str, backend: str, device: torch.device, batch: int, size: int, repeats: int, bf16: bool
) -> float:
    """Median seconds of one training step of ``mode`` on ``arch`` with adder layers run by ``backend``."""
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

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    print(f"torch {torch.__version__}, device {device}, batch {args.batch}, {args.size}x{args.size}, bf16 {args.bf16}")
    shape = (device, args.batch, args.size, args.repeats, args.bf16)
    for arch in args.archs:
        results = {"cnn": step_seconds(arch, "cnn", "auto", *shape)}
        for backend in args.backends:
            for mode in ADDER_MODES:
                results[f"{mode}[{backend}]"] = step_seconds(arch, mode, backend, *shape)
        for name, seconds in results.items():
            print(f"{arch:<28} {name:<14} {seconds * 1e3:9.1f} ms/step  {seconds / results['cnn']:6.2f}x cnn")


if __name__ == "__main__":
    main()

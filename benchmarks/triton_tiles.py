"""Tile sizes of the Triton adder kernels at the ResNet-20 layer shapes, timed against cuDNN in one run.

For every shape, each candidate tile of the forward kernel is timed against ``conv2d``'s forward and each tile of
the input-gradient kernel against the convolution's input gradient (``convolution_backward``), both in the same
process; the default tile (the one ``forward_config``/``input_grad_config`` pick) is marked ``*``.

Usage (needs CUDA)::

    python benchmarks/triton_tiles.py --batch 256
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from adder_op import SHAPES, LayerShape, time_call

from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.triton_backend import (
    TileConfig,
    forward_config,
    input_grad_config,
    triton_forward,
    triton_input_grad,
)

CANDIDATES = tuple(
    TileConfig(rows, cols, warps)
    for rows, cols, warps in (
        (32, 16, 2), (64, 16, 2), (64, 16, 4), (128, 16, 4), (256, 16, 4), (256, 16, 8),
        (64, 32, 4), (128, 32, 4), (128, 32, 8), (256, 32, 8),
        (32, 64, 4), (64, 64, 4), (128, 64, 4), (128, 64, 8),
    )
)  # fmt: skip


def sweep(shape: LayerShape, batch: int, repeats: int) -> None:
    """Print every candidate's time and its ratio to cuDNN for both kernels at one shape."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, shape.in_channels, shape.size, shape.size, generator=gen).cuda()
    w = torch.randn(shape.out_channels, shape.in_channels, shape.kernel_size, shape.kernel_size, generator=gen).cuda()
    k, s, p = shape.kernel_size, shape.stride, shape.padding
    geom = AdderGeometry((k, k), (s, s), (p, p), (1, 1))
    g = torch.randn(batch, shape.out_channels, *geom.output_size(shape.size, shape.size)).cuda()
    device = torch.device("cuda")
    conv_fwd = time_call(lambda: F.conv2d(x, w, None, s, p), device, repeats, 3)
    conv_dx = time_call(
        lambda: torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                    [True, False, False]),
        device, repeats, 3,
    )  # fmt: skip
    kernels = (
        ("forward", conv_fwd, forward_config(shape.out_channels), lambda c: triton_forward(x, w, geom, c)),
        ("input grad", conv_dx, input_grad_config(shape.in_channels), lambda c: triton_input_grad(g, x, w, geom, c)),
    )
    for name, conv_ms, default, run in kernels:
        print(f"{shape.name:<16} {name:<10} cudnn {conv_ms:8.3f} ms")
        best = None
        for config in CANDIDATES:
            ms = time_call(lambda run=run, config=config: run(config), device, repeats, 2)
            best = min(best or (ms, config), (ms, config), key=lambda t: t[0])
            mark = "*" if config == default else " "
            print(f"  {mark} rows {config.block_rows:4d} cols {config.block_cols:3d} warps {config.num_warps} "
                  f"{ms:8.3f} ms {ms / conv_ms:7.2f}x cudnn")  # fmt: skip
        print(f"  best: {best[1]} {best[0]:.3f} ms ({best[0] / conv_ms:.2f}x cudnn)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {args.batch}, "
          f"cudnn tf32 {torch.backends.cudnn.allow_tf32}")  # fmt: skip
    for shape in SHAPES["resnet20"]:
        sweep(shape, args.batch, args.repeats)


if __name__ == "__main__":
    main()

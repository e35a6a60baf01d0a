"""The adder layer in standard tensor operators only, for exporters (ONNX, ``torch.export``).

:class:`~pkkd_lightning.ops.adder.Adder2d` runs a custom autograd Function over C/Triton kernels, which no exporter
can see into. :class:`PortableAdder2d` computes the same forward pass, AdderNet eq. (2)
``Y[n, o, i, j] = -sum_{c, u, v} |X[n, c, s*i + d*u - p, s*j + d*v - p] - F[o, c, u, v]|`` (+ bias), from ``pad``,
strided slices, subtraction, ``abs``, ``sum`` and negation: an exported graph holds ``Pad``, ``Slice``, ``Reshape``,
``Sub``, ``Abs``, ``ReduceSum``, ``Add``, ``Concat`` and ``Neg`` nodes and no multiplication. The sum runs one kernel
tap ``(u, v)`` at a time (no im2col copy of the input), over chunks of output channels sized so that one tap's
differences stay under ``chunk_bytes`` per image. It is meant for inference: autograd through it gives the plain
gradients of ``|x - f|``, not AdderNet's (eqs. 5-6). Training keeps the fast kernels; :func:`portable_copy` converts a
trained network for export.

``PortableAdder2d`` is deliberately *not* an ``nn.Conv2d``: code that treats convolutions as multiplications
(op counters, conv-BatchNorm folding, quantisers) must not take it for one. It keeps conv's ``weight``/``bias`` names
and geometry attributes, so state dicts are interchangeable with ``Adder2d``'s.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from pkkd_lightning.ops.adder import Adder2d

#: Default cap on one kernel tap's differences per image, bytes (a batch holds ``batch`` times this). ResNet-20,
#: 32x32, batch 64, one CPU thread, seconds per forward pass (eager torch / onnxruntime) for 64 KiB, 256 KiB, 1 MiB
#: and 4 MiB: 7.8 / 4.3, 9.7 / 8.2, 12.6 / 9.1, 21.7 / 9.4 (batch 1: 0.04-0.08 s in onnxruntime for all four).
#: Small chunks keep the intermediates in cache at the price of more graph nodes (11k against 2k).
DEFAULT_CHUNK_BYTES = 2**16

IntPair = int | tuple[int, int]


class PortableAdder2d(nn.Module):
    """AdderNet's ``Y = -||X - F||_1`` layer (Chen et al., CVPR 2020, eq. 2) built from exportable operators.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, device, dtype: as in
            ``nn.Conv2d`` (zero padding; ``groups`` must divide both channel counts).
        chunk_bytes: cap on the differences of one kernel tap held per image; output channels are processed in
            chunks below it (only memory and graph size depend on it, not the result).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = False,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(groups, int) or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"`groups` must be a positive integer dividing in_channels={in_channels} and "
                f"out_channels={out_channels}, got {groups!r}"
            )
        if isinstance(padding, str):
            raise ValueError(f"`padding` must be an int or a pair of ints, got {padding!r}")
        if chunk_bytes < 1:
            raise ValueError(f"`chunk_bytes` must be a positive number of bytes, got {chunk_bytes}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.chunk_bytes = chunk_bytes
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None)
        nn.init.normal_(self.weight)

    @classmethod
    def from_adder(cls, layer: Adder2d, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> PortableAdder2d:
        """A portable layer computing what ``layer`` computes, holding the *same* weight and bias parameters."""
        portable = cls(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.groups, False, chunk_bytes, device="meta",
        )  # fmt: skip
        portable.weight, portable.bias = layer.weight, layer.bias
        return portable.train(layer.training)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output height and width, ``floor((H + 2p - d*(k-1) - 1) / s) + 1`` per axis (as ``nn.Conv2d``)."""
        sizes = [
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation)
        ]
        return sizes[0], sizes[1]

    def _channels_per_chunk(self, out_h: int, out_w: int, element_size: int) -> int:
        """Output channels per group whose one-tap differences (all groups, one image) fit in ``chunk_bytes``."""
        per_channel = self.groups * (self.in_channels // self.groups) * out_h * out_w * element_size
        return max(1, min(self.out_channels // self.groups, self.chunk_bytes // per_channel))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``-sum |X_patch - F|`` per output position and filter (module docstring): (N, C_out, H', W')."""
        if input.ndim != 4 or input.shape[1] != self.in_channels:
            raise ValueError(
                f"PortableAdder2d: `input` must be (N, {self.in_channels}, H, W), got {tuple(input.shape)}"
            )
        # An exported graph fixes the image size and keeps the batch dynamic (-1 below). Plain ints make the ONNX
        # tracer record the spatial sizes as constants (with a TracerWarning) instead of shape arithmetic nodes.
        height, width = int(input.shape[2]), int(input.shape[3])
        out_h, out_w = self.output_size(height, width)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"PortableAdder2d: kernel_size={self.kernel_size} (dilation={self.dilation}) is larger than the "
                f"padded input {tuple(input.shape[2:])} + 2*padding={self.padding}"
            )
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel_size, self.stride, self.dilation, self.padding
        groups, group_in, group_out = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
        padded = F.pad(input, (pw, pw, ph, ph)) if ph or pw else input
        # (N, groups, 1, C_in/g, H, W) against filters (groups, chunk, C_in/g, 1, 1): broadcast over the chunk.
        x = padded.reshape(-1, groups, 1, group_in, height + 2 * ph, width + 2 * pw)
        filters = self.weight.reshape(groups, group_out, group_in, kh, kw)
        step = self._channels_per_chunk(out_h, out_w, input.element_size())
        chunks = []
        for start in range(0, group_out, step):
            taps = filters[:, start : start + step]
            distance = None
            for u in range(kh):
                for v in range(kw):
                    rows = slice(u * dh, u * dh + sh * (out_h - 1) + 1, sh)
                    cols = slice(v * dw, v * dw + sw * (out_w - 1) + 1, sw)
                    term = (x[..., rows, cols] - taps[..., u, v, None, None]).abs_().sum(3)  # (N, g, chunk, H', W')
                    distance = term if distance is None else distance + term
            chunks.append(distance)
        distance = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
        out = -distance.reshape(-1, self.out_channels, out_h, out_w)
        return out if self.bias is None else out + self.bias.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


def portable_copy(model: nn.Module, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> nn.Module:
    """A deep copy of ``model`` with every :class:`~pkkd_lightning.ops.adder.Adder2d` replaced by a
    :class:`PortableAdder2d` holding the copy's weights; ``model`` itself is left unchanged.

    Args:
        model: a network (or a single ``Adder2d``).
        chunk_bytes: see :class:`PortableAdder2d`.

    Returns:
        The copy, in ``model``'s training mode; it computes the same outputs (up to float summation order).
    """
    duplicate = copy.deepcopy(model)
    if isinstance(duplicate, Adder2d):
        return PortableAdder2d.from_adder(duplicate, chunk_bytes)
    replaced: dict[int, PortableAdder2d] = {}  # a layer shared under several paths stays shared
    for path, module in list(duplicate.named_modules(remove_duplicate=False)):
        if isinstance(module, Adder2d):  # before any nn.Conv2d test: Adder2d subclasses it
            if id(module) not in replaced:
                replaced[id(module)] = PortableAdder2d.from_adder(module, chunk_bytes)
            parent, _, name = path.rpartition(".")
            setattr(duplicate.get_submodule(parent), name, replaced[id(module)])
    return duplicate

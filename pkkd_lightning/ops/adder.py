"""The AdderNet layer: ``Y = -||X - F||_1`` with AdderNet's training rules (Chen et al., CVPR 2020).

``Adder2d`` subclasses ``nn.Conv2d`` and only replaces ``forward`` (as timm's ``StdConv2d`` does), so an
adder network and its CNN twin share constructor arguments, module paths and state-dict keys, and converting a
model is a constructor swap. Consequently ``isinstance(layer, nn.Conv2d)`` is True for an adder layer: code that
must tell the two apart checks ``isinstance(layer, Adder2d)`` first. ``groups`` (grouped and depthwise layers)
means what it means for ``nn.Conv2d``; see :mod:`pkkd_lightning.ops.grouped`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from pkkd_lightning.ops.backends import AdderBackend, AdderBackendName, check_backend_name, get_backend
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.grouped import grouped_backend

IntPair = int | tuple[int, int]


class _AdderFunction(torch.autograd.Function):
    """Autograd node with AdderNet's gradients: ``dY/dF = X - F`` and ``dY/dX = HardTanh(F - X)``."""

    @staticmethod
    def forward(ctx, x, weight, geom: AdderGeometry, backend: AdderBackend, chunk_bytes: int | None):
        ctx.save_for_backward(x, weight)
        ctx.geom, ctx.backend, ctx.chunk_bytes = geom, backend, chunk_bytes
        return backend.forward(x, weight, geom, chunk_bytes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_input, grad_weight = ctx.backend.backward(
            grad_out.contiguous(),
            x,
            weight,
            ctx.geom,
            ctx.chunk_bytes,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return (
            grad_input if ctx.needs_input_grad[0] else None,
            grad_weight if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
        )


def check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Raise ``ValueError`` naming ``groups`` unless it is a positive integer dividing both channel counts."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"`groups` must be a positive integer, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"`groups` must divide in_channels={in_channels} and out_channels={out_channels}, got {groups}"
        )


def _validate(input: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, groups: int) -> None:
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"adder2d: `input` must be a 4-D tensor (N, C, H, W), got {shape}")
    if not input.is_floating_point():
        raise TypeError(f"adder2d: `input` must be a floating-point tensor, got dtype {input.dtype}")
    if weight.ndim != 4:
        raise ValueError(
            f"adder2d: `weight` must be 4-D (C_out, C_in / groups, kh, kw), got shape {tuple(weight.shape)}"
        )
    check_groups(input.shape[1], weight.shape[0], groups)
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"adder2d: `input` has {input.shape[1]} channels but the layer expects in_channels="
            f"{weight.shape[1] * groups} (`weight` has in_channels / groups = {weight.shape[1]}, groups={groups})"
        )
    if input.dtype != weight.dtype:
        raise TypeError(f"adder2d: `input` dtype {input.dtype} differs from `weight` dtype {weight.dtype}")
    out_h, out_w = geom.output_size(input.shape[2], input.shape[3])
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"adder2d: kernel_size={geom.kernel_size} (dilation={geom.dilation}) is larger than the padded "
            f"input {tuple(input.shape[2:])} + 2*padding={geom.padding}"
        )


def adder2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    backend: AdderBackendName = "auto",
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Adder "convolution": ``Y[n, o, i, j] = -sum_k |X_patch(n, i, j)[k] - F[o, k]| (+ bias[o])``.

    Same arguments and output shape as ``torch.nn.functional.conv2d``. With ``groups=g`` the patch of output
    channel ``o`` covers only the ``C_in / g`` input channels of its group ``o // (C_out / g)``. Gradients follow
    AdderNet eqs. (5)-(6): ``X - F`` for the weight and ``HardTanh(F - X)`` for the input. Under autocast the
    distance is computed in float32 (an L1 sum over hundreds of terms loses too much in bf16/fp16) and the
    output is float32.

    Args:
        input: (N, C_in, H, W) floating-point tensor.
        weight: (C_out, C_in / groups, kh, kw) filters.
        bias: optional (C_out,) bias added to the output.
        stride, padding, dilation: as in ``conv2d`` (zero padding).
        groups: as in ``conv2d``: a positive integer dividing C_in and C_out (``C_in``: depthwise).
        backend: one of :data:`~pkkd_lightning.ops.backends.BACKENDS` (``auto`` picks the fastest usable).
        chunk_bytes: cap on the unfolded patches held at once (``None``: about the size of ``input``).
            Only memory and speed depend on it, not the result.

    Returns:
        (N, C_out, H_out, W_out) tensor.
    """
    check_backend_name(backend)
    return _adder2d(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups, backend, chunk_bytes)


def _adder2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    backend: AdderBackendName,
    chunk_bytes: int | None,
) -> torch.Tensor:
    """:func:`adder2d` with a backend name that is already validated (``Adder2d`` checks it once, when built)."""
    device_type = input.device.type if isinstance(input, torch.Tensor) else "cpu"
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return _adder2d(
                input.float(), weight.float(), None if bias is None else bias.float(),
                stride, padding, dilation, groups, backend, chunk_bytes,
            )  # fmt: skip
    geom = AdderGeometry(tuple(weight.shape[2:]), stride, padding, dilation)
    _validate(input, weight, geom, groups)
    runner = grouped_backend(get_backend(backend, input), groups, weight.shape[1], weight.shape[0] // groups)
    out = _AdderFunction.apply(input.contiguous(), weight, geom, runner, chunk_bytes)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class Adder2d(nn.Conv2d):
    """Drop-in adder replacement for ``nn.Conv2d`` (AdderNet, Chen et al., CVPR 2020).

    Keeps ``nn.Conv2d``'s constructor, ``weight``/``bias`` parameters and state-dict keys; only the response
    changes to the negative L1 distance. ``bias`` defaults to False as in the reference models, where a
    BatchNorm follows every adder layer.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias, device, dtype: as in
            ``nn.Conv2d``. ``padding`` must be numeric (``'same'``/``'valid'`` are not supported).
        groups: as in ``nn.Conv2d``: a positive integer dividing ``in_channels`` and ``out_channels``
            (``groups=in_channels`` is a depthwise layer); see :mod:`pkkd_lightning.ops.grouped`.
        padding_mode: must be ``'zeros'``.
        eta: AdderNet's adaptive learning-rate coefficient (eq. 13): the weight gradient is rescaled to
            ``eta * sqrt(k) * g / ||g||_2`` by :func:`~pkkd_lightning.ops.adaptive_lr.rescale_adder_gradients`;
            ``None`` turns the rescaling off for this layer.
        backend: which implementation runs (see :data:`~pkkd_lightning.ops.backends.BACKENDS`).
        chunk_bytes: cap on unfolded patches held at once (``None`` = automatic).
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
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        eta: float | None = 0.2,
        backend: AdderBackendName = "auto",
        chunk_bytes: int | None = None,
    ) -> None:
        check_groups(in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f"Adder2d supports padding_mode='zeros' only, got {padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError(f"Adder2d needs a numeric padding (int or pair), got {padding!r}")
        if eta is not None and eta <= 0:
            raise ValueError(f"Adder2d eta must be a positive float or None, got {eta}")
        check_backend_name(backend)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device, dtype,
        )  # fmt: skip
        self.eta = eta
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``-||X - F||_1`` over sliding windows, see :func:`adder2d`."""
        return _adder2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.backend,
            self.chunk_bytes,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eta={self.eta}, backend={self.backend!r}"

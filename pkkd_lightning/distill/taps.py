"""Feature taps: capture intermediate layer outputs by module path with forward hooks.

Models keep returning plain logits; a :class:`FeatureTaps` context registers hooks on the named layers only
while it is active (torchdistill's ``ForwardHookManager``, timm's ``FeatureHooks``), so a model outside the
context runs with zero overhead. One list of paths serves both twins, because the CNN and its adder twin share
module paths.

PKKD (Xu et al., NeurIPS 2020, arXiv 2009.13044) compares the layers in kernel space. The adder side needs only
the output ``Y_A = -||x - f||_1`` (Laplace kernel ``exp(Y_A / sigma)``). The conv side's Gaussian kernel
``exp(-||x - f||_2^2 / (2 sigma^2))`` follows from ``||x - f||^2 = ||x||^2 + ||f||^2 - 2 x.f``, so for a
convolution the tap also records the squared norm of every input patch (a convolution of ``x^2`` with a ones
kernel) and of every filter. Everything stays in the autograd graph.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

from pkkd_lightning.models.structure import default_distill_points, trace_layers
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.ops.window_sums import grouped_window_sums


@dataclass
class TapRecord:
    """What a tap captured from one layer in the last forward pass.

    Attributes:
        output: the layer's raw output (before the BatchNorm that follows it), (N, C_out, H, W).
        patch_sq_norms: convolutions only: ``||x_patch||_2^2`` per output position, (N, 1, H, W), i.e.
            ``conv2d(x**2, ones(1, C_in, kh, kw))`` with the layer's stride, padding and dilation; per output
            channel, (N, C_out, H, W), for a grouped convolution.
        filter_sq_norms: convolutions only: ``||f||_2^2`` per filter, (C_out,).
    """

    output: torch.Tensor
    patch_sq_norms: torch.Tensor | None = None
    filter_sq_norms: torch.Tensor | None = None


def patch_sq_norms(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``||x_patch||_2^2`` for every output position of ``conv`` on input ``x``: (N, 1, H_out, W_out).

    For a grouped convolution a filter sees only its group's input channels, so the norm is per group, repeated
    for each output channel of the group: (N, C_out, H_out, W_out).

    Args:
        conv: a zero-padded convolution.
        x: its input, (N, C_in, H, W).

    Returns:
        The norms, in float32 for half-precision inputs (computed outside autocast).
    """
    # At least float32 and outside autocast: the Gaussian kernel subtracts these norms from each other.
    with torch.autocast(x.device.type, enabled=False):
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        groups = conv.groups
        norms = grouped_window_sums(x.square(), groups, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
        return norms if groups == 1 else norms.repeat_interleave(conv.out_channels // groups, dim=1)


def full_precision_output(conv: nn.Conv2d, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``output`` itself, or recomputed in float32 when autocast produced it in half precision.

    The Gaussian kernel needs ``||x||^2 + ||f||^2 - 2 x.f``, a small difference of large numbers: with ``x.f``
    rounded to bfloat16 (8 bits of mantissa) it is mostly rounding error. Only the distilled layers pay for the
    extra float32 convolution.
    """
    if output.dtype not in (torch.float16, torch.bfloat16):
        return output
    with torch.autocast(x.device.type, enabled=False):
        bias = None if conv.bias is None else conv.bias.float()
        return F.conv2d(x.float(), conv.weight.float(), bias, conv.stride, conv.padding, conv.dilation)


def _valid_conv_paths(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d) and name]


class FeatureTaps:
    """Capture :class:`TapRecord` s of the named convolution/adder layers while used as a context manager.

    Example::

        taps = FeatureTaps(model, default_tap_paths(model))
        with taps:
            logits = model(images)
        records = taps.pop()  # {path: TapRecord}, then cleared

    Records survive the end of the ``with`` block until :meth:`pop` (which clears them) or the next entry. If a
    layer runs several times in one forward pass, the last call's record is kept.

    Args:
        model: the model to tap.
        paths: module paths (as in ``model.named_modules()``) of ``nn.Conv2d`` or ``Adder2d`` layers.

    Raises:
        ValueError: if ``paths`` is a string, or a path is repeated, names no submodule, names a module that is
            not an ``nn.Conv2d``, or names a convolution with non-zero padding (its patch norms are not defined
            here).
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        if isinstance(paths, str):
            raise ValueError(f"FeatureTaps: `paths` must be a sequence of module paths, not the string {paths!r}")
        paths = list(paths)
        if len(set(paths)) != len(paths):
            raise ValueError(f"FeatureTaps: `paths` has duplicates: {paths}")
        self.model = model
        self.modules: dict[str, nn.Conv2d] = {}
        for path in paths:
            try:
                module = model.get_submodule(path) if path else None
            except AttributeError:
                module = None
            if not isinstance(module, nn.Conv2d):
                raise ValueError(
                    f"FeatureTaps: path {path!r} is not an nn.Conv2d/Adder2d layer of {type(model).__name__}; "
                    f"valid conv paths: {_valid_conv_paths(model)}"
                )
            if not isinstance(module, Adder2d) and module.padding_mode != "zeros":
                raise ValueError(
                    f"FeatureTaps: path {path!r} is a conv with padding_mode={module.padding_mode!r}; only 'zeros' "
                    "padding can be tapped"
                )
            self.modules[path] = module
        self._handles: list[RemovableHandle] = []
        self._records: dict[str, TapRecord] = {}

    @property
    def active(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def _hook(self, path: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, Adder2d):
                self._records[path] = TapRecord(output)
            else:
                output = full_precision_output(module, inputs[0], output)
                filter_norms = module.weight.to(output.dtype).square().sum(dim=(1, 2, 3))
                self._records[path] = TapRecord(output, patch_sq_norms(module, inputs[0]), filter_norms)

        return hook

    def __enter__(self) -> FeatureTaps:
        if self.active:
            raise RuntimeError("FeatureTaps is already active; it cannot be entered twice")
        self._records.clear()
        self._handles = [module.register_forward_hook(self._hook(path)) for path, module in self.modules.items()]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def pop(self) -> dict[str, TapRecord]:
        """The records of the last forward pass by path (only the layers that ran); then clears them."""
        records, self._records = self._records, {}
        return records

    def remove(self) -> None:
        """Remove the hooks (idempotent); captured records stay until :meth:`pop`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def default_tap_paths(model: nn.Module) -> list[str]:
    """The layers PKKD distils by default: the last body convolution of every stage.

    Stages are the top-level children named ``layer<k>`` (the torchvision/timm ResNet convention that the
    CIFAR ResNets and VGG-small follow too); a model without them (a timm MobileNet, a user's network) gets
    :func:`~pkkd_lightning.models.structure.default_distill_points` (timm's ``feature_info`` stages, else the
    changes of resolution), read off one traced forward pass. A stage's last block is its last child if it is an
    ``nn.Sequential`` and the stage itself otherwise; the tap is the block's last *direct* ``nn.Conv2d`` child,
    which skips shortcut projections (``downsample.0``) and attention sub-modules. This gives
    ``layer{1,2,3}.<last>.conv2`` for CIFAR ResNets, ``layer{1,2,3}.conv2`` for VGG-small, and
    ``layer{1..4}.<last>.conv2`` / ``.conv3`` for timm ResNet-18 / ResNet-50.

    Args:
        model: a CNN or its adder twin (both give the same paths).

    Returns:
        Module paths, one per stage, in stage order.

    Raises:
        ValueError: if a ``layer<k>`` stage has no convolution, or a model without stages has no adder layer;
            pass explicit paths to :class:`FeatureTaps` then.
    """
    stages = [name for name, _ in model.named_children() if re.fullmatch(r"layer\d+", name)]
    if not stages:
        return default_distill_points(model, trace_layers(model))
    paths = []
    for stage_name in sorted(stages, key=lambda name: int(name[len("layer") :])):
        stage = model.get_submodule(stage_name)
        block_path, block = stage_name, stage
        if isinstance(stage, nn.Sequential) and len(stage) > 0:
            block_name, block = list(stage.named_children())[-1]
            block_path = f"{stage_name}.{block_name}"
        convs = [name for name, child in block.named_children() if isinstance(child, nn.Conv2d)]
        if not convs:
            raise ValueError(f"default_tap_paths: block {block_path!r} has no direct nn.Conv2d child")
        paths.append(f"{block_path}.{convs[-1]}")
    return paths

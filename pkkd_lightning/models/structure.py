"""What a model's convolutions are followed by, and where its resolution changes, read off one forward pass.

Any network (a timm model, a user's factory) is described by running it once on a small random input with
pre-forward hooks on its leaf modules and BatchNorms (a timm ``BatchNormAct2d`` holds its activation, so BatchNorms
are hooked as a whole), which records the order the layers run in and each convolution's output size:

* :func:`unnormalized_adder_layers`: adder layers whose next layer is not a BatchNorm. AdderNet needs one: an
  adder layer's response ``-||x - f||_1`` is a large negative number that only a BatchNorm brings back to a useful
  range (ConvNeXt follows its depthwise convolutions with LayerNorm, squeeze-excitation convolutions have none).
* :func:`default_distill_points`: PKKD's default taps for any network: for a timm model the last adder layer of
  each stage that its ``feature_info`` reports, otherwise the last adder layer before each change of resolution
  (:func:`resolution_stage_ends`). Candidates are the bias-free adder layers (:func:`distill_candidates`) followed
  by a BatchNorm (all of them if none is) outside shortcut branches (``downsample``/``shortcut`` in the path)
  **[ours]**: the main path's features are the ones the paper distils, as it taps the last layer of each stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_warn

from pkkd_lightning.ops import Adder2d

#: Side of the random input the model is traced on, tried in order (some networks need a minimum size).
TRACE_SIZES = (32, 64, 224)


@dataclass(frozen=True)
class LayerCall:
    """One call of a hooked module in a forward pass.

    Attributes:
        path: module path.
        module: the module.
        output_hw: the output's spatial size, for convolutions (``None`` otherwise).
    """

    path: str
    module: nn.Module
    output_hw: tuple[int, int] | None


def trace_layers(model: nn.Module, in_chans: int = 3) -> list[LayerCall]:
    """The calls of ``model``'s leaf modules and BatchNorms in one forward pass, in execution order.

    The model runs in eval mode without gradients on one random image (no state changes: BatchNorm statistics
    are not updated in eval mode), then returns to its previous mode.

    Raises:
        RuntimeError: the model fails on every size in :data:`TRACE_SIZES`.
    """
    hooked = {
        path: module
        for path, module in model.named_modules()
        if path and (not list(module.children()) or isinstance(module, nn.modules.batchnorm._BatchNorm))
    }
    calls: list[tuple[str, nn.Module]] = []
    sizes: dict[int, tuple[int, int]] = {}

    def before(path: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            calls.append((path, module))

        return hook

    def after(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        sizes[len(calls) - 1] = tuple(output.shape[-2:])

    handles = [m.register_forward_pre_hook(before(p)) for p, m in hooked.items()]
    handles += [m.register_forward_hook(after) for m in hooked.values() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    errors = []
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        for side in TRACE_SIZES:
            calls.clear()
            sizes.clear()
            try:
                with torch.no_grad():
                    generator = torch.Generator().manual_seed(0)  # the global random stream is left alone
                    model(torch.randn(1, in_chans, side, side, generator=generator).to(device))
                break
            except RuntimeError as err:
                errors.append(f"{side}x{side}: {err}")
        else:
            raise RuntimeError(f"cannot trace {type(model).__name__} on a random input ({'; '.join(errors)})")
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [LayerCall(path, module, sizes.get(index)) for index, (path, module) in enumerate(calls)]


def unnormalized_adder_layers(calls: list[LayerCall]) -> list[str]:
    """Paths of the adder layers whose next call is not a BatchNorm (see the module docstring)."""
    found = []
    for index, call in enumerate(calls):
        if isinstance(call.module, Adder2d):
            after = calls[index + 1].module if index + 1 < len(calls) else None
            if not isinstance(after, nn.modules.batchnorm._BatchNorm):
                found.append(call.path)
    return list(dict.fromkeys(found))


def resolution_stage_ends(calls: list[LayerCall]) -> list[str]:
    """The last adder layer before each change of output resolution, and the last adder layer, in order (among
    the adder layers in ``calls``)."""
    adders = [call for call in calls if isinstance(call.module, Adder2d)]
    ends = [a.path for a, b in zip(adders, adders[1:]) if a.output_hw != b.output_hw]
    if adders:
        ends.append(adders[-1].path)
    return list(dict.fromkeys(ends))


def distill_candidates(model: nn.Module) -> list[str]:
    """Paths of the layers PKKD can distil: adder layers without a bias (the CNN twin's Gaussian kernel is defined
    for a bias-free convolution)."""
    return [path for path, m in model.named_modules() if isinstance(m, Adder2d) and m.bias is None]


def _candidates(calls: list[LayerCall]) -> list[LayerCall]:
    """Distillable calls followed by a BatchNorm (all distillable ones if none is), not on a shortcut branch."""
    adders = [
        c
        for c in calls
        if isinstance(c.module, Adder2d) and c.module.bias is None and not _SHORTCUT.intersection(c.path.split("."))
    ]
    unnormalized = set(unnormalized_adder_layers(calls))
    normalized = [c for c in adders if c.path not in unnormalized]
    return normalized or adders


_SHORTCUT = {"downsample", "shortcut"}


def default_distill_points(model: nn.Module, calls: list[LayerCall]) -> list[str]:
    """PKKD's default distillation points for ``model`` (see the module docstring), from its traced ``calls``.

    Raises:
        ValueError: the model has no bias-free adder layer to distil.
    """
    candidates = _candidates(calls)
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no bias-free adder layer to distil; use model.mode ann or kd, or list "
            "model.distill_points"
        )
    feature_info = getattr(model, "feature_info", None)
    if feature_info:
        points = []
        for info in feature_info:
            prefix = info["module"]
            inside = [c.path for c in candidates if c.path == prefix or c.path.startswith(prefix + ".")]
            if inside and inside[-1] not in points:
                points.append(inside[-1])
        if points:
            return points
    return resolution_stage_ends(candidates)


def check_distill_points(model: nn.Module, points: list[str]) -> None:
    """Raise ``ValueError`` naming the points of ``points`` that are not distillable layers of ``model``, with the
    candidates (:func:`distill_candidates`)."""
    if isinstance(points, str):
        raise ValueError(f"model.distill_points must be a list of module paths, not the string {points!r}")
    candidates = distill_candidates(model)
    wrong = [point for point in points if point not in candidates]
    if wrong:
        shown = ", ".join(candidates[:12]) + (f", ... ({len(candidates)} in all)" if len(candidates) > 12 else "")
        raise ValueError(
            f"model.distill_points: {wrong} are not bias-free adder layers of the ANN ({type(model).__name__}); "
            f"candidates: {shown or 'none'}"
        )


def warn_unnormalized_adder_layers(model: nn.Module, arch: str) -> list[str]:
    """Warn (once, rank zero) about the adder layers of ``model`` not followed by a BatchNorm; return them."""
    found = unnormalized_adder_layers(trace_layers(model))
    if found:
        shown = ", ".join(found[:6]) + (f", ... ({len(found)} in all)" if len(found) > 6 else "")
        rank_zero_warn(
            f"{arch}: {len(found)} adder layer(s) have no BatchNorm right after them ({shown}). AdderNet needs one "
            "(an adder response -||x - f||_1 is large and negative; without a BatchNorm training may diverge or "
            "stall). Keep them multiplication-based with model.keep (module paths or patterns, e.g. "
            "--model.keep '[\"*.se.*\"]'), or use a network with BatchNorm after each convolution."
        )
    return found

"""Turn a CNN into its AdderNet twin by swapping ``nn.Conv2d`` modules for ``Adder2d`` in place.

AdderNet (Chen et al., CVPR 2020) keeps the stem convolution and the classifier multiplication-based and makes
every other convolution, including 1x1 shortcut projections, an adder layer. Because ``Adder2d`` subclasses
``nn.Conv2d`` with the same constructor and parameter names, the swap keeps module paths, state-dict keys and
parameter counts, so one model definition serves both twins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from pkkd_lightning.ops import Adder2d


def conv_paths(model: nn.Module) -> list[str]:
    """Module paths of every ``nn.Conv2d`` (``Adder2d`` included) in registration order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def default_keep_paths(model: nn.Module) -> list[str]:
    """The layers AdderNet keeps multiplication-based: the stem and, if it is a convolution, the classifier.

    The stem is the first ``nn.Conv2d`` in registration order (``conv1`` in timm and CIFAR ResNets,
    ``layer1.conv1`` in VGG-small). The classifier is ``model.get_classifier()`` (timm's accessor, which our
    CIFAR models implement too); a linear classifier is never converted anyway, so it is only listed when it
    is a convolution, like the 1x1 conv classifier of the CIFAR ResNets.

    Args:
        model: the CNN to inspect.

    Returns:
        Module paths to pass as ``keep`` to :func:`adderize`.

    Raises:
        ValueError: if ``model`` has no ``nn.Conv2d``.
    """
    convs = conv_paths(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d, so it has no stem to keep")
    keep = [convs[0]]
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier()
        for name, module in model.named_modules():
            if module is classifier and isinstance(module, nn.Conv2d) and name not in keep:
                keep.append(name)
    return keep


def expand_keep(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The convolution paths matching ``patterns`` (exact module paths or ``fnmatch`` globs such as ``"*.se.*"``).

    Raises:
        ValueError: a pattern matches no convolution of ``model``; the message lists some that exist.
    """
    if isinstance(patterns, str):
        raise ValueError(f"model.keep must be a list of module paths or patterns, not the string {patterns!r}")
    convs = conv_paths(model)
    kept: list[str] = []
    for pattern in patterns:
        matched = [path for path in convs if fnmatch.fnmatchcase(path, pattern)]
        if not matched:
            shown = ", ".join(convs[:8]) + (", ..." if len(convs) > 8 else "")
            raise ValueError(
                f"model.keep: {pattern!r} matches no convolution of {type(model).__name__} (paths such as {shown})"
            )
        kept += [path for path in matched if path not in kept]
    return kept


def _to_adder(conv: nn.Conv2d, path: str, adder_kwargs: dict[str, Any]) -> Adder2d:
    reasons = []
    if type(conv).forward is not nn.Conv2d.forward:
        reasons.append(f"it is a {type(conv).__name__} with its own forward (e.g. dynamic 'same' padding)")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        reasons.append(f"padding_mode={conv.padding_mode!r}, padding={conv.padding!r}: adder layers need numeric zeros")
    if reasons:
        raise ValueError(
            f"adderize: cannot convert {path!r}: {'; '.join(reasons)}. Keep it multiplication-based with "
            f"model.keep (e.g. --model.keep '[\"{path}\"]')"
        )
    adder = Adder2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype, **adder_kwargs,
    )  # fmt: skip
    with torch.no_grad():
        adder.weight.copy_(conv.weight)
        if conv.bias is not None:
            adder.bias.copy_(conv.bias)
    adder.weight.requires_grad_(conv.weight.requires_grad)
    adder.train(conv.training)
    return adder


def adderize(model: nn.Module, keep: Iterable[str] | None = None, **adder_kwargs: Any) -> nn.Module:
    """Replace, in place, every ``nn.Conv2d`` not in ``keep`` by an ``Adder2d`` with the same hyper-parameters.

    Each new layer copies ``in/out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``padding_mode``, whether it has a bias, device, dtype, training mode and the weight (and bias)
    values. Layers that already are ``Adder2d`` are left alone, so the call is idempotent. Grouped and depthwise
    convolutions become grouped adder layers. An ``nn.Conv2d`` subclass with its own ``forward`` (timm's
    ``Conv2dSame``, ``StdConv2d``) is refused rather than converted with its forward silently dropped.

    Args:
        model: the CNN; modified in place.
        keep: module paths to leave multiplication-based; ``None`` means :func:`default_keep_paths` (the stem,
            and the classifier if it is a convolution).
        **adder_kwargs: ``Adder2d``-only arguments for every new layer (``eta``, ``backend``, ``chunk_bytes``).

    Returns:
        ``model`` itself, or the new ``Adder2d`` if ``model`` is a bare convolution not kept.

    Raises:
        ValueError: if ``keep`` is a string or one of its paths names no submodule, or a layer cannot become an
            adder layer (non-zero padding, or a ``Conv2d`` subclass with its own ``forward``), naming it.
    """
    if isinstance(keep, str):
        raise ValueError(f"adderize: `keep` must be an iterable of module paths, not the string {keep!r}")
    keep = set(default_keep_paths(model) if keep is None else keep)
    for path in sorted(keep):
        try:
            model.get_submodule(path)
        except AttributeError as err:
            raise ValueError(f"adderize: `keep` path {path!r} is not a submodule of {type(model).__name__}") from err
    targets = [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and not isinstance(module, Adder2d) and path not in keep
    ]
    for path, conv in targets:
        adder = _to_adder(conv, path, adder_kwargs)
        if not path:
            return adder
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, adder)
    return model

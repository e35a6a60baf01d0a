"""Architecture specs: which CNN ``model.arch`` names, and how it is built.

A spec is one string, as ``--model.arch`` and ``student.pt`` hold it:

| spec                  | the CNN                                                                  |
|-----------------------|--------------------------------------------------------------------------|
| `resnet20`, ...       | a built-in model (:data:`BUILTIN_MODELS`, the paper's CIFAR and ImageNet) |
| `timm:<name>`         | ``timm.create_model(<name>, pretrained=False, num_classes=...)``          |
| `<module>:<function>` | your factory ``function(num_classes) -> nn.Module`` (working directory)   |
| a registered name     | a factory registered in Python with :func:`register_model`               |

The AdderNet twin is always the CNN converted by :func:`~pkkd_lightning.models.adderize.adderize`. Unknown names
are refused with the closest known ones (timm's own names for ``timm:``).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from pkkd_lightning.models.imagenet import resnet18, resnet50
from pkkd_lightning.models.resnet_cifar import resnet20, resnet32, resnet56
from pkkd_lightning.models.vgg_small import vgg_small

#: A factory building the CNN: ``factory(num_classes=..., **kwargs) -> nn.Module``.
ModelFactory = Callable[..., nn.Module]

#: The models this package defines (the paper's table), by name.
BUILTIN_MODELS: dict[str, ModelFactory] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet50": resnet50,
}
_REGISTERED: dict[str, ModelFactory] = {}
TIMM_PREFIX = "timm:"
ARCH_HELP = (
    "a built-in name (resnet20, resnet32, resnet56, vgg_small, resnet18, resnet50), 'timm:<name>' for any timm model "
    "(timm:resnet10t, timm:mobilenetv3_small_050, ...), '<module>:<function>' for your own factory "
    "function(num_classes) -> nn.Module importable from the working directory, or a name registered with "
    "pkkd_lightning.models.register_model"
)


def register_model(name: str, factory: ModelFactory | None = None) -> Any:
    """Register ``factory(num_classes) -> nn.Module`` under ``name``, so that ``model.arch: <name>`` builds it.

    Usable as a call (``register_model("mynet", make_mynet)``) or a decorator (``@register_model("mynet")``).

    Raises:
        ValueError: ``name`` is a built-in name, contains ``:``, or is registered already with another factory.
    """

    def add(function: ModelFactory) -> ModelFactory:
        if not name or ":" in name or name in BUILTIN_MODELS:
            raise ValueError(f"register_model: name must be non-empty, without ':' and not built in, got {name!r}")
        if _REGISTERED.get(name, function) is not function:
            raise ValueError(f"register_model: {name!r} is registered already (with {_REGISTERED[name]!r})")
        _REGISTERED[name] = function
        return function

    return add if factory is None else add(factory)


def list_models() -> list[str]:
    """The built-in and registered names, sorted (``timm:`` and ``module:function`` specs come on top)."""
    return sorted([*BUILTIN_MODELS, *_REGISTERED])


def resolve_factory(spec: str) -> ModelFactory:
    """The factory a spec names (see the module docstring).

    Raises:
        ValueError: an unknown name (with the closest known ones), an unknown timm model, or a ``module:function``
            whose module cannot be imported or has no such callable.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model.arch must be a non-empty string ({ARCH_HELP}), got {spec!r}")
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    if spec.startswith(TIMM_PREFIX):
        return _timm_factory(spec[len(TIMM_PREFIX) :])
    if ":" in spec:
        return _user_factory(spec)
    close = difflib.get_close_matches(spec, list_models(), n=3) or difflib.get_close_matches(spec, _timm_names(), n=3)
    hint = f"; did you mean {', '.join(_as_spec(c) for c in close)}?" if close else ""
    raise ValueError(f"model.arch: unknown architecture {spec!r}{hint} It accepts {ARCH_HELP}")


def _as_spec(name: str) -> str:
    return name if name in BUILTIN_MODELS or name in _REGISTERED else f"{TIMM_PREFIX}{name}"


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _timm_factory(name: str) -> ModelFactory:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, _timm_names(), n=5)
        hint = f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close else ""
        raise ValueError(f"model.arch: timm has no model {name!r}{hint} (timm.list_models() lists them)")

    def create(num_classes: int, **kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    create.__name__ = f"timm_{name}"
    return create


def _user_factory(spec: str) -> ModelFactory:
    module_name, _, function_name = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # `python path/to/cli.py` puts the script's folder on the path, not the user's working directory
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"model.arch {spec!r}: cannot import module {module_name!r} from the working directory {cwd} or the "
            f"Python path ({err}); '<module>:<function>' names your own factory"
        ) from err
    finally:
        if added:
            sys.path.remove(cwd)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"model.arch {spec!r}: module {module_name!r} has no callable {function_name!r}")

    def create(num_classes: int, **kwargs: Any) -> nn.Module:
        model = function(num_classes, **kwargs)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model.arch {spec!r}: {function_name}({num_classes}) returned {type(model).__name__}")
        return model

    return create

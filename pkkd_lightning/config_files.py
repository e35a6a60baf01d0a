"""Checks of the YAML config files given with ``--config``, before jsonargparse reads them.

jsonargparse (like PyYAML) lets a later duplicate key replace an earlier one without a word: ``lr: 0.5`` then
``lr: 0.001`` trains with 0.001, and a second ``model:`` block drops the whole first one. These checks refuse such
files, and a few other mistakes, naming the file, the key and the lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """A mapping in a config file names the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing mappings that repeat a key (``<<`` merges are left to PyYAML)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(
                    f"key {key!r} appears twice in the same mapping, at lines {seen[key]} and {line}; a YAML loader "
                    "would silently keep only the second: remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def config_files(args: Sequence[str]) -> Iterator[Path]:
    """The files given with ``--config`` in ``args`` (either ``--config F`` or ``--config=F``)."""
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            yield Path(args[index + 1])
        elif arg.startswith("--config="):
            yield Path(arg.split("=", 1)[1])


def check_config_file(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` if it (or a group file it references) is not valid YAML, repeats a key
    in one mapping, or sets ``model.num_classes``, which the CLI takes from the data module."""
    if not path.is_file():
        return  # jsonargparse reports a missing file itself, with its name
    try:
        with path.open() as handle:
            config = yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKeyError as err:
        raise ValueError(f"config file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        return
    model = config.get("model")
    if isinstance(model, dict) and "num_classes" in model:
        raise ValueError(
            f"config file {path} sets model.num_classes, but the number of classes follows the data module "
            "(data.num_classes is linked to model.num_classes); remove the key"
        )
    for value in config.values():  # groups given as files, e.g. `data: data/cifar10.yaml`, relative to this file
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            check_config_file(path.parent / value)

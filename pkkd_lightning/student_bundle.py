"""A trained student as users get it back: the network, its class names and the preprocessing it expects.

Three kinds of file are accepted wherever a student is read (``load_student_bundle``, ``load_exported_student``,
``tools.predict``, ``tools.export``, ``tools.op_counter``):

* ``student.pt``, format 2 (``format_version: 2``, written by
  :func:`~pkkd_lightning.callbacks.export_student.export_student`), self-describing:

  | field             | meaning                                                                              |
  |-------------------|--------------------------------------------------------------------------------------|
  | `arch`            | the architecture spec, as ``model.arch`` accepts it                                  |
  | `layer_type`      | ``adder`` (an AdderNet) or ``conv`` (a ``cnn``-mode run's CNN)                       |
  | `num_classes`     | number of logits                                                                     |
  | `keep`            | module paths of the convolutions an adder student keeps multiplication-based         |
  | `state_dict`      | the weights                                                                          |
  | `class_names`     | the name of each logit, or None                                                      |
  | `input_size`      | ``[H, W]`` the network was trained on                                                |
  | `in_chans`        | input channels (1: greyscale, 3: RGB)                                                |
  | `mean`, `std`     | per-channel normalisation, applied to pixels in [0, 1]                               |
  | `resize`, `crop`  | shorter side resized to ``resize`` (bilinear), then a ``crop`` x ``crop`` centre crop |
  | `package_version` | the pkkd-lightning version that wrote it                                             |
  | `hparams`         | the run's key hyper-parameters (mode, init, feature_weight, beta, tau, lr, eta, epochs) |

* ``student.pt`` of format 1 (no ``format_version``): ``arch``, ``layer_type``, ``num_classes`` and ``state_dict``
  only. The network loads; asking for its preprocessing raises an error naming the missing fields.
* A Lightning checkpoint (``.ckpt``) of a PKKD run: the ``student.*`` weights, ``arch``/``mode``/``num_classes``/
  ``keep`` from ``hyper_parameters``, class names from ``data_classes``, and the preprocessing from ``data_info``
  (which :class:`~pkkd_lightning.callbacks.ExportStudent` adds to every checkpoint of a run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image

from pkkd_lightning import __version__
from pkkd_lightning.models import build_model
from pkkd_lightning.modes import student_layer_type
from pkkd_lightning.network_io import read_checkpoint
from pkkd_lightning.ops import Adder2d

#: The ``format_version`` :func:`student_fields` describes.
FORMAT_VERSION = 2
#: Fields every ``student.pt`` has had (format 1).
REQUIRED_FIELDS = ("arch", "layer_type", "num_classes", "state_dict")
#: What a data module's ``export_info()`` returns (the ``data_info`` of :func:`student_fields`).
DATA_INFO_FIELDS = ("class_names", "input_size", "mean", "std", "resize", "crop")
#: The fields :class:`Preprocessing` is built from.
PREPROCESSING_FIELDS = ("in_chans", "mean", "std", "resize", "crop")
#: Hyper-parameters of the run recorded in ``hparams`` (with ``epochs``).
RECORDED_HPARAMS = ("mode", "init", "feature_weight", "beta", "tau", "lr", "eta")


def _in_channels(model: nn.Module) -> int:
    """The input channels of ``model``: those of its first convolution in registration order (the stem).

    Raises:
        ValueError: ``model`` has no ``nn.Conv2d``.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d, so its input channels are unknown")
    return first.in_channels


def _kept_convolutions(model: nn.Module) -> list[str]:
    """Module paths of the multiplication-based convolutions of an adder network (``keep`` of ``build_model``)."""
    return [path for path, m in model.named_modules() if isinstance(m, nn.Conv2d) and not isinstance(m, Adder2d)]


def student_fields(
    hparams: Mapping[str, Any], student: nn.Module, data_info: Mapping[str, Any] | None, epochs: int | None = None
) -> dict[str, Any]:
    """The format-2 fields describing ``student`` (every field of the table in the module docstring but
    ``state_dict``).

    Args:
        hparams: the :class:`~pkkd_lightning.PKKDModule` hyper-parameters (``arch``, ``mode``, ``num_classes``, ...).
        student: the student network.
        data_info: a data module's ``export_info()`` (keys :data:`DATA_INFO_FIELDS`), or None when unknown.
        epochs: the run's length in epochs, if known.

    Raises:
        ValueError: ``data_info`` lacks one of :data:`DATA_INFO_FIELDS`, naming them.
    """
    data_info = dict(data_info or dict.fromkeys(DATA_INFO_FIELDS))
    missing = [key for key in DATA_INFO_FIELDS if key not in data_info]
    if missing:
        raise ValueError(f"`data_info` must have the keys {list(DATA_INFO_FIELDS)}; missing {missing}")
    layer_type = student_layer_type(hparams["mode"])
    return {
        "format_version": FORMAT_VERSION,
        "arch": hparams["arch"],
        "layer_type": layer_type,
        "num_classes": hparams["num_classes"],
        "keep": _kept_convolutions(student) if layer_type == "adder" else [],
        **{key: data_info[key] for key in DATA_INFO_FIELDS},
        "in_chans": _in_channels(student),
        "package_version": __version__,
        "hparams": {**{key: hparams.get(key) for key in RECORDED_HPARAMS}, "epochs": epochs},
    }


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform of the data a student was trained on, for one PIL image.

    ``x = (center_crop(resize(image, resize), crop) / 255 - mean) / std`` on an image converted to greyscale
    (``in_chans=1``) or RGB (``in_chans=3``); ``resize`` scales the shorter side (bilinear, antialiased, as
    ``torchvision.transforms.Resize``).
    """

    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int
    crop: int

    def __post_init__(self) -> None:
        if self.in_chans not in (1, 3):
            raise ValueError(f"`in_chans` must be 1 (greyscale) or 3 (RGB) to read images, got {self.in_chans}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"`mean` {self.mean} and `std` {self.std} need one value per channel ({self.in_chans})")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The (in_chans, crop, crop) float32 tensor the network takes for ``image``."""
        image = TF.center_crop(TF.resize(image.convert("L" if self.in_chans == 1 else "RGB"), self.resize), self.crop)
        return TF.normalize(TF.to_tensor(image), list(self.mean), list(self.std))


@dataclass(frozen=True)
class StudentBundle:
    """A student network with what it takes to use it.

    Attributes:
        model: the network, in eval mode, on the CPU.
        class_names: the name of each logit, or None when the file does not record them.
        info: the file's format-2 fields but ``state_dict`` (a format-1 file has only ``arch``, ``layer_type``,
            ``num_classes``).
        source: the file it was read from.
    """

    model: nn.Module
    class_names: list[str] | None
    info: dict[str, Any]
    source: Path

    @property
    def preprocessing(self) -> Preprocessing:
        """PIL image -> input tensor, as the training data's evaluation transform.

        Raises:
            ValueError: the file does not record it (a format-1 export, or a checkpoint written before
                ``data_info`` existed), naming the missing fields.
        """
        missing = [key for key in PREPROCESSING_FIELDS if self.info.get(key) is None]
        if missing:
            raise ValueError(
                f"{self.source} records no preprocessing (missing fields {missing}): it was written before exports "
                "described their data. Pass a checkpoint of a run made with this version instead, or preprocess the "
                "images yourself as the data module's evaluation transform does (resize, centre crop, normalise)"
            )
        info = self.info
        return Preprocessing(info["in_chans"], tuple(info["mean"]), tuple(info["std"]), info["resize"], info["crop"])

    def label(self, index: int) -> str:
        """The class name of logit ``index``, or the index itself as text when no names are recorded."""
        return self.class_names[index] if self.class_names else str(index)


def _build_student(
    path: Path, arch: str, layer_type: str, num_classes: int, keep: Sequence[str] | None, state: dict[str, Any]
) -> nn.Module:
    """The network a file names, with its weights loaded."""
    model = build_model(arch, layer_type, num_classes, keep=list(keep or []) if layer_type == "adder" else None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit arch={arch}, layer_type={layer_type}: {err}") from err
    return model


def _from_lightning_checkpoint(checkpoint: dict[str, Any], path: Path) -> tuple[nn.Module, dict[str, Any]]:
    hparams = checkpoint.get("hyper_parameters") or {}
    missing = [key for key in ("arch", "mode", "num_classes") if key not in hparams]
    if missing:
        raise ValueError(f"{path} is a Lightning checkpoint but not of a PKKD run (hyper_parameters lack {missing})")
    state = {k[len("student.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("student.")}
    layer_type = student_layer_type(hparams["mode"])
    model = _build_student(path, hparams["arch"], layer_type, hparams["num_classes"], hparams.get("keep"), state)
    info = student_fields(hparams, model, checkpoint.get("data_info"))
    if checkpoint.get("data_classes"):
        info["class_names"] = list(checkpoint["data_classes"])
    return model, info


def load_student_bundle(path: str | Path) -> StudentBundle:
    """Read a ``student.pt`` (format 1 or 2) or a PKKD run's Lightning checkpoint (see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is unreadable, or neither an exported student nor a PKKD checkpoint (naming what is
            missing), or its weights do not fit the architecture it names.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not an exported student or a Lightning checkpoint (it holds a {type(checkpoint)})")
    if "pytorch-lightning_version" in checkpoint:
        model, info = _from_lightning_checkpoint(checkpoint, path)
    else:
        missing = [key for key in REQUIRED_FIELDS if key not in checkpoint]
        if missing:
            raise ValueError(f"{path} is not an exported student (missing {missing})")
        fields = [checkpoint[key] for key in ("arch", "layer_type", "num_classes")]
        model = _build_student(path, *fields, checkpoint.get("keep"), checkpoint["state_dict"])
        info = {key: value for key, value in checkpoint.items() if key != "state_dict"}
    class_names = info.get("class_names")
    return StudentBundle(model.eval(), list(class_names) if class_names else None, info, path)

"""Count multiplications and additions per layer type in one forward pass, and estimate their energy.

Conventions, those of the AdderNet paper's cost table (Chen et al., CVPR 2020, Table 1: ResNet-18 "CNN 1.8G
mul + 1.8G add; ANN 0 mul + 3.6G add"):

* ``conv``: one multiply-accumulate per filter tap and output element, counted as one multiplication *and*
  one addition: ``mul = add = N * C_out * (C_in / groups) * kh * kw * H_out * W_out``.
* ``adder``: ``|x - f|`` then accumulate is two additions (the subtraction and the sum; the absolute value is a
  sign-bit clear), no multiplication: ``mul = 0``, ``add = 2 * N * C_out * (C_in / groups) * kh * kw * H_out * W_out``
  (``Adder2d`` and its exportable twin ``PortableAdder2d``).
* ``linear``: ``mul = add = rows * in_features * out_features``.

Biases, BatchNorm, activations and pooling are not counted (they are O(activations), not O(MACs), and the
paper's table leaves them out). Like the paper's table, these are MAC-level counts; in our ANNs the stem
convolution and the classifier stay multiplications and are reported as ``conv``/``linear`` rows.

Energy uses 45 nm, 32-bit floating-point costs from Horowitz, "Computing's energy problem (and what we can do
about it)", ISSCC 2014: 0.9 pJ per addition and 3.7 pJ per multiplication (memory access not included).

With ``groups`` every output sums over the ``C_in / groups`` input channels of its group only.

Command line: ``python -m pkkd_lightning.tools.op_counter --model resnet18 --layer-type adder --num-classes
1000 --input-size 224``, or for a trained student ``--model runs/.../student.pt`` (or a run's ``.ckpt``): its
architecture, layer types, channels and input size come from the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from pkkd_lightning.models import LAYER_TYPES, build_model
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.ops.portable import PortableAdder2d
from pkkd_lightning.student_bundle import load_student_bundle

#: Energy of one 32-bit float addition at 45 nm, picojoules (Horowitz, ISSCC 2014).
ADD_PJ = 0.9
#: Energy of one 32-bit float multiplication at 45 nm, picojoules (Horowitz, ISSCC 2014).
MUL_PJ = 3.7
#: Layer types in report order.
OP_TYPES = ("conv", "adder", "linear")
#: Suffixes of files ``--model`` reads as a trained student rather than an architecture spec.
STUDENT_SUFFIXES = (".pt", ".pth", ".ckpt")
_COUNTED = (nn.Conv2d, PortableAdder2d, nn.Linear)


@dataclass(frozen=True)
class LayerOps:
    """Operations of one layer call.

    Attributes:
        path: module path.
        layer_type: ``conv``, ``adder`` or ``linear``.
        mul: multiplications.
        add: additions.
    """

    path: str
    layer_type: str
    mul: int
    add: int

    @property
    def energy_pj(self) -> float:
        """``MUL_PJ * mul + ADD_PJ * add``."""
        return MUL_PJ * self.mul + ADD_PJ * self.add


@dataclass(frozen=True)
class OpCount:
    """Per-layer operation counts of one forward pass.

    Attributes:
        layers: one entry per call of a counted layer, in execution order.
        input_size: the input shape that was run.
    """

    layers: tuple[LayerOps, ...]
    input_size: tuple[int, ...]

    def by_type(self) -> dict[str, LayerOps]:
        """Totals per layer type present, in :data:`OP_TYPES` order (each total's ``path`` is its type)."""
        totals = {}
        for layer_type in OP_TYPES:
            rows = [row for row in self.layers if row.layer_type == layer_type]
            if rows:
                mul, add = sum(row.mul for row in rows), sum(row.add for row in rows)
                totals[layer_type] = LayerOps(layer_type, layer_type, mul, add)
        return totals

    @property
    def mul(self) -> int:
        """All multiplications."""
        return sum(row.mul for row in self.layers)

    @property
    def add(self) -> int:
        """All additions."""
        return sum(row.add for row in self.layers)

    @property
    def energy_pj(self) -> float:
        """Estimated arithmetic energy in picojoules (see the module docstring)."""
        return sum(row.energy_pj for row in self.layers)

    def table(self, per_layer: bool = False) -> str:
        """A plain-text table of the totals per layer type (and of every layer if ``per_layer``)."""
        header = f"{'layer':<32} {'type':<7} {'mul':>10} {'add':>10} {'energy uJ':>10}"

        def line(name: str, row: LayerOps) -> str:
            mul, add, energy_uj = _giga(row.mul), _giga(row.add), row.energy_pj / 1e6
            return f"{name:<32} {row.layer_type:<7} {mul:>10} {add:>10} {energy_uj:>10.1f}"

        lines = [f"input {tuple(self.input_size)}", header]
        if per_layer:
            lines += [line(row.path, row) for row in self.layers] + ["-" * len(header)]
        calls = {t: sum(row.layer_type == t for row in self.layers) for t in OP_TYPES}
        lines += [line(f"{t} layers ({calls[t]} calls)", row) for t, row in self.by_type().items()]
        lines.append(line("total", LayerOps("total", "all", self.mul, self.add)))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _giga(count: int) -> str:
    if count == 0:
        return "0"
    return f"{count / 1e9:.3f}G" if count >= 1e7 else f"{count / 1e6:.3f}M"


def _layer_ops(path: str, module: nn.Module, output: torch.Tensor) -> LayerOps:
    if isinstance(module, nn.Conv2d | PortableAdder2d):  # Adder2d is an nn.Conv2d
        kh, kw = module.kernel_size
        macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        if isinstance(module, Adder2d | PortableAdder2d):
            return LayerOps(path, "adder", 0, 2 * macs)
        return LayerOps(path, "conv", macs, macs)
    macs = output.numel() * module.in_features
    return LayerOps(path, "linear", macs, macs)


@torch.no_grad()
def count_ops(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> OpCount:
    """Count the multiplications and additions of ``nn.Conv2d``, ``Adder2d`` (and ``PortableAdder2d``) and
    ``nn.Linear`` layers.

    Runs one forward pass on a zero input with forward hooks on those layers, in eval mode (so BatchNorm
    running statistics are untouched; the training mode is restored afterwards) and without gradients. The
    counts depend only on shapes; the pass is real, so an adder model pays an adder forward pass.

    Args:
        model: any model made of the counted layer types (others are ignored).
        input_size: shape of the input tensor, batch included.

    Returns:
        The per-layer :class:`OpCount`.
    """
    rows: list[LayerOps] = []

    def hook(path: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        return lambda module, inputs, output: rows.append(_layer_ops(path, module, output))

    handles = [
        module.register_forward_hook(hook(path))
        for path, module in model.named_modules()
        if isinstance(module, _COUNTED)
    ]
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (None, None)
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(*input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return OpCount(tuple(rows), tuple(input_size))


def _model_to_count(
    model: str, layer_type: str, num_classes: int, input_size: int | None
) -> tuple[nn.Module, tuple[int, int, int], str]:
    """The network ``--model`` names, its (channels, H, W) input and a title for the table."""
    if Path(model).suffix not in STUDENT_SUFFIXES:
        size = input_size or 224
        return (
            build_model(model, layer_type, num_classes),
            (3, size, size),
            f"{model} ({layer_type}, {num_classes} classes)",
        )
    bundle = load_student_bundle(model)
    info = bundle.info
    size = [input_size] * 2 if input_size else info.get("input_size")
    if not size:
        raise ValueError(f"{model} records no input size (an old export): give --input-size")
    title = f"{model}: {info['arch']} ({info['layer_type']}, {info['num_classes']} classes)"
    return bundle.model, (info.get("in_chans") or 3, *size), title


def main(args: Sequence[str] | None = None) -> OpCount:
    """Command-line entry point: build a model (or read a trained student), count its operations, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        required=True,
        help="an architecture spec as model.arch accepts it (resnet20, timm:<name>, ...), or a student.pt or .ckpt",
    )
    parser.add_argument("--layer-type", default="conv", choices=LAYER_TYPES, help="for a spec (a file records it)")
    parser.add_argument("--num-classes", type=int, default=10, help="for a spec (a file records it)")
    parser.add_argument(
        "--input-size", type=int, help="height = width of the input image (default: 224, or what a file records)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--per-layer", action="store_true", help="also print every layer")
    ns = parser.parse_args(args)
    try:
        model, input_size, title = _model_to_count(ns.model, ns.layer_type, ns.num_classes, ns.input_size)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    counts = count_ops(model, (ns.batch_size, *input_size))
    print(title)
    print(counts.table(per_layer=ns.per_layer))
    return counts


if __name__ == "__main__":
    main()

"""Export a trained student to ONNX or to a ``torch.export`` program that runs without this package.

``python -m pkkd_lightning.tools.export STUDENT_OR_CKPT --format onnx|torch-export --output FILE``

The student (a ``student.pt`` or a PKKD run's ``.ckpt``, :mod:`pkkd_lightning.student_bundle`) is converted with
:func:`~pkkd_lightning.ops.portable.portable_copy`, so that its adder layers are made of standard operators, and
exported for images of its recorded input size (``--input-size H W`` for an export that records none) with a
dynamic batch dimension. Input ``input`` (N, in_chans, H, W), normalised as the student's preprocessing does; output
``logits`` (N, num_classes).

* ``onnx``: PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset
  :data:`ONNX_OPSET`. The ``torch.export``-based ONNX exporter needs the ``onnxscript`` package, which this project
  does not depend on. The student's description (class names, preprocessing, ...) is stored as JSON in the model's
  ``metadata_props`` under ``pkkd_student``. Needs ``pip install 'pkkd-lightning[export]'``.
* ``torch-export``: ``torch.export.export`` saved with ``torch.export.save``; ``torch.export.load`` reads it back
  with plain PyTorch. The description is the extra file ``pkkd_student.json``.

For ONNX the tool prints the node types of every adder layer. Nodes are attributed to layers by their names: the
exporter names a node ``/<scope>/.../<scope>/<Op>_<k>``, one scope per module *call* on the way from the root to the
node, each scope being the module's path from its last non-numeric part on (``layer1.0.conv1`` -> ``conv1``,
``layer2.0.downsample.0`` -> ``downsample.0``, ``layer1.0`` -> ``layer1.0``; the exporter's
``_unqualified_variable_name``). :func:`onnx_scopes` runs the network once with hooks to build each module's scope
from the same rule and the actual call nesting, and a node belongs to a layer when its name is that layer's scope
followed by ``/<Op>``.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pkkd_lightning.atomic_io import atomic_write
from pkkd_lightning.ops.portable import DEFAULT_CHUNK_BYTES, PortableAdder2d, portable_copy
from pkkd_lightning.student_bundle import StudentBundle, load_student_bundle

FORMATS = ("onnx", "torch-export")
#: The ONNX opset written.
ONNX_OPSET = 17
#: Key of the student's description in the ONNX ``metadata_props`` and name of the ``torch.export`` extra file.
METADATA_KEY = "pkkd_student"
#: Operators that multiply; none may appear in an exported adder layer.
MULTIPLYING_OPS = frozenset({"Mul", "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})


def _description(bundle: StudentBundle) -> str:
    """The student's description (the file's fields but the weights) as JSON."""
    return json.dumps({"source": str(bundle.source), **bundle.info}, default=str)


def _example_input(bundle: StudentBundle, input_size: Sequence[int] | None) -> torch.Tensor:
    """A (2, in_chans, H, W) float32 input: batch 2, so that exporters do not specialise the batch dimension to 1."""
    size = input_size or bundle.info.get("input_size")
    if not size:
        raise ValueError(f"{bundle.source} records no input size (an old export): give --input-size H W")
    return torch.zeros(2, bundle.info.get("in_chans") or 3, *size)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, description: str) -> Any:
    """Write ``model`` as ONNX (legacy TorchScript exporter, opset :data:`ONNX_OPSET`, dynamic batch), atomically.

    Returns:
        The written ``onnx.ModelProto``.
    """
    try:
        import onnx
    except ImportError as err:
        raise ImportError("--format onnx needs the onnx package: pip install 'pkkd-lightning[export]'") from err
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The portable adder layers turn the (static) image size into constants on purpose, which the tracer reports
        # as TracerWarnings; the legacy exporter announces its deprecation; the pads of a Pad node are built with
        # reversed slices it cannot fold (onnxruntime folds them when it loads the model).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {METADATA_KEY: description})
    onnx.checker.check_model(proto)
    atomic_write(path, lambda out: out.write(proto.SerializeToString()))
    return proto


def export_program(model: nn.Module, example: torch.Tensor, path: str | Path, description: str) -> Path:
    """Write ``torch.export.export(model)`` (dynamic batch) with ``torch.export.save``, atomically."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    extra = {f"{METADATA_KEY}.json": description}
    return atomic_write(path, lambda out: torch.export.save(program, out, extra_files=extra))


def _unqualified(path: str) -> str:
    """A module path from its last non-numeric part on, as the ONNX exporter names the module's scope."""
    parts = path.split(".")
    last_name = max((i for i, part in enumerate(parts) if not part.isnumeric()), default=0)
    return ".".join(parts[last_name:])


@torch.no_grad()
def onnx_scopes(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Module path -> the scope the ONNX exporter gives the nodes of that module's own operations (see the module
    docstring), for every module a forward pass on ``example`` calls."""
    paths = {module: path for path, module in model.named_modules()}
    calls: list[str] = []
    scopes: dict[str, str] = {}

    def enter(module: nn.Module, args: Any) -> None:
        calls.append(_unqualified(paths[module]))
        scopes.setdefault(paths[module], "/" + "/".join(calls))

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        calls.pop()

    submodules = [module for module in paths if module is not model]
    handles = [m.register_forward_pre_hook(enter) for m in submodules]
    handles += [m.register_forward_hook(leave) for m in submodules]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return scopes


def adder_layer_node_counts(proto: Any, model: nn.Module, example: torch.Tensor) -> dict[str, Counter]:
    """ONNX node types per portable adder layer of ``model`` (the exported network; ``example`` its input),
    attributed by node name (:func:`onnx_scopes`)."""
    scopes = onnx_scopes(model, example)
    layers = {scopes[path]: path for path, m in model.named_modules() if isinstance(m, PortableAdder2d)}
    counts = {path: Counter() for path in layers.values()}
    for node in proto.graph.node:
        if (layer := layers.get(node.name.rpartition("/")[0])) is not None:
            counts[layer][node.op_type] += 1
    return counts


def _node_count_table(counts: dict[str, Counter]) -> str:
    lines = [f"{'adder layer':<28} {'nodes':>6}  node types"]
    for layer, counter in counts.items():
        types = ", ".join(f"{op} {n}" for op, n in sorted(counter.items()))
        lines.append(f"{layer:<28} {sum(counter.values()):>6}  {types}")
    multiplying = sum(n for counter in counts.values() for op, n in counter.items() if op in MULTIPLYING_OPS)
    lines.append(f"multiplying nodes ({', '.join(sorted(MULTIPLYING_OPS))}) in the adder layers: {multiplying}")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> Path:
    """Command-line entry point; returns the written file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("student", help="a student.pt or a PKKD run's .ckpt")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="for exports that record none")
    parser.add_argument(
        "--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help="per-image memory cap of an adder layer's step"
    )
    ns = parser.parse_args(args)
    try:
        bundle = load_student_bundle(ns.student)
        example = _example_input(bundle, ns.input_size)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    model = portable_copy(bundle.model, ns.chunk_bytes).eval()
    description = _description(bundle)
    if ns.format == "onnx":
        proto = export_onnx(model, example, ns.output, description)
        print(f"wrote {ns.output}: ONNX opset {ONNX_OPSET} (TorchScript exporter), input {tuple(example.shape[1:])}")
        print(_node_count_table(adder_layer_node_counts(proto, model, example)))
    else:
        export_program(model, example, ns.output, description)
        print(f"wrote {ns.output}: torch.export program, input {tuple(example.shape[1:])}")
    return Path(ns.output)


if __name__ == "__main__":
    main()

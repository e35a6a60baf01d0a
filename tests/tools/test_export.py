"""tools.export: ONNX and torch.export files of a student, their adder layers free of multiplications, and their
outputs against the package's student (in this process; tests/tools/test_roundtrip.py runs them without it)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from pkkd_lightning.ops import Adder2d
from pkkd_lightning.ops.portable import PortableAdder2d, portable_copy
from pkkd_lightning.student_bundle import load_student_bundle
from pkkd_lightning.tools.export import (
    METADATA_KEY,
    MULTIPLYING_OPS,
    ONNX_OPSET,
    adder_layer_node_counts,
    export_program,
    main,
    onnx_scopes,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_onnx_scopes_follow_the_exporters_naming() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Tanh()))
            self.inner = nn.ModuleDict({"gate": nn.Sigmoid()})  # a container that is never called

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner["gate"](self.conv(x))

    model = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Identity(), Block()))
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 2, 3, 3),), buffer, dynamo=False, opset_version=ONNX_OPSET)
    names = {node.name.rpartition("/")[0] for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    scopes = onnx_scopes(model, torch.randn(1, 2, 3, 3))
    assert scopes["1.1.conv.1.0"] == "/1/1.1/conv/conv.1/conv.1.0" and scopes["1.1.inner.gate"] == "/1/1.1/gate"
    assert {scopes[path] for path in ("0", "1.1.conv.0", "1.1.conv.1.0", "1.1.inner.gate")} == names


def test_onnx_export(tmp_path: Path, ann_student: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "student.onnx"
    main([str(ann_student), "--format", "onnx", "--output", str(out)])
    assert "multiplying nodes" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == ONNX_OPSET
    bundle = load_student_bundle(ann_student)
    assert json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])["class_names"] == bundle.class_names
    portable = portable_copy(bundle.model)
    counts = adder_layer_node_counts(proto, portable, torch.zeros(2, 3, 8, 8))
    assert len(counts) == 20  # ResNet-20: 18 body layers and 2 1x1 shortcuts
    for layer, counter in counts.items():
        kernel = portable.get_submodule(layer).kernel_size
        assert not set(counter) & MULTIPLYING_OPS, (layer, counter)
        assert counter["Sub"] == counter["Abs"] == counter["ReduceSum"] == kernel[0] * kernel[1]  # 8x8: one chunk
    # Every subtraction, absolute value and sum of the graph is in an adder layer (the attribution misses none),
    # and the only multiplications are the stem and the 1x1-conv classifier that AdderNet keeps.
    attributed = sum(counter[op] for counter in counts.values() for op in ("Sub", "Abs", "ReduceSum"))
    assert attributed == sum(node.op_type in ("Sub", "Abs", "ReduceSum") for node in proto.graph.node)
    multiplying = [n.name for n in proto.graph.node if n.op_type in MULTIPLYING_OPS]
    assert multiplying == ["/conv1/Conv", "/fc/Conv"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            expected = bundle.model(x).numpy()
        actual = session.run(None, {"input": x.numpy()})[0]
        assert relative_error(actual, expected) <= 1e-4
        assert (actual.argmax(1) == expected.argmax(1)).all()


def test_torch_export_program(tmp_path: Path) -> None:
    """A small network here (exporting ResNet-20 takes half a minute: the round trip in test_roundtrip.py does)."""
    model = nn.Sequential(Adder2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Adder2d(4, 6, 3, stride=2))
    model[1].running_mean.uniform_(-20, -10)
    portable = portable_copy(model).eval()
    portable.append(PortableAdder2d(6, 4, (1, 3), padding=(0, 1), groups=2))
    out = export_program(portable, torch.zeros(2, 3, 9, 9), tmp_path / "net.pt2", json.dumps({"arch": "tiny"}))
    extra = {f"{METADATA_KEY}.json": ""}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra[f"{METADATA_KEY}.json"]) == {"arch": "tiny"}
    assert not any(isinstance(m, PortableAdder2d) for m in program.module().modules())  # plain aten operators
    for batch in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 9, 9)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), portable(x))


def test_an_old_export_needs_an_input_size(
    tmp_path: Path, ann_student: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = torch.load(ann_student, weights_only=False)
    old = tmp_path / "old.pt"
    torch.save({key: payload[key] for key in ("arch", "layer_type", "num_classes", "state_dict")}, old)
    with pytest.raises(SystemExit):
        main([str(old), "--format", "onnx", "--output", str(tmp_path / "old.onnx")])
    assert "records no input size" in capsys.readouterr().err
    main([str(old), "--format", "onnx", "--output", str(tmp_path / "old.onnx"), "--input-size", "8", "8"])
    assert onnx.load(str(tmp_path / "old.onnx")).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 8

"""Take the student away: fit the digits demo through the CLI, export it to ONNX and to a torch.export program, run
both in a Python that cannot import pkkd_lightning, and compare with the package's student on real digit images;
then predict a folder holding a corrupt file, and count the student's operations."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pkkd_lightning.models import build_model
from pkkd_lightning.student_bundle import load_student_bundle
from pkkd_lightning.tools import op_counter
from tests.cli.conftest import REPO_ROOT
from tests.tools.conftest import write_digit_images

pytestmark = pytest.mark.slow

#: Runs the exported files with onnxruntime and torch alone; pkkd_lightning is made unimportable first (an editable
#: or regular install would otherwise find it), so that anything in the files that needs it fails.
RUN_WITHOUT_PACKAGE = """
import json, sys
sys.modules["pkkd_lightning"] = None
import numpy as np, onnxruntime, torch
try:
    import pkkd_lightning
except ImportError:
    pass
else:
    raise SystemExit("pkkd_lightning is importable")
onnx_file, program_file, inputs_file, out_dir = sys.argv[1:]
x = np.load(inputs_file)
session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
np.save(f"{out_dir}/onnx.npy", session.run(None, {"input": x})[0])
with torch.no_grad():
    np.save(f"{out_dir}/program.npy", torch.export.load(program_file).module()(torch.from_numpy(x)).numpy())
description = json.loads(session.get_modelmeta().custom_metadata_map["pkkd_student"])
loaded = sorted(name for name, module in sys.modules.items() if name.startswith("pkkd_lightning") and module)
with open(f"{out_dir}/report.json", "w") as report:
    json.dump({"class_names": description["class_names"], "loaded": loaded}, report)
"""


def _python_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def student(run_cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student.pt of one epoch of the digits demo on 8x8 images."""
    root = tmp_path_factory.mktemp("digits_fit")
    result = run_cli(
        *("fit", "--config", "configs/digits_pkkd.yaml", "--trainer.max_epochs", "1"),
        *("--data.init_args.image_size", "8", "--trainer.default_root_dir", str(root)),
        *("--test_after_fit", "false", "--trainer.enable_progress_bar", "false"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root / "version_0" / "student.pt"


def test_exports_run_without_the_package_and_agree_with_it(student: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    files = {"onnx": tmp_path / "student.onnx", "torch-export": tmp_path / "student.pt2"}
    outputs = {}
    for fmt, path in files.items():
        result = _python_module("pkkd_lightning.tools.export", str(student), "--format", fmt, "--output", str(path))
        assert result.returncode == 0, result.stderr[-4000:]
        outputs[fmt] = result.stdout
    assert (
        "multiplying nodes (Conv, ConvTranspose, Einsum, Gemm, MatMul, Mul) in the adder layers: 0" in outputs["onnx"]
    )

    bundle = load_student_bundle(student)
    images = write_digit_images(tmp_path / "images", 64)
    inputs = []
    for path in images:
        with Image.open(path) as image:
            inputs.append(bundle.preprocessing(image))
    x = torch.stack(inputs)
    with torch.no_grad():
        expected = bundle.model(x).numpy()
    np.save(tmp_path / "inputs.npy", x.numpy())
    (tmp_path / "run.py").write_text(RUN_WITHOUT_PACKAGE)
    isolated = [sys.executable, "-I", "run.py", str(files["onnx"]), str(files["torch-export"]), "inputs.npy", "."]
    result = subprocess.run(isolated, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {"class_names": [str(d) for d in range(10)], "loaded": []}
    for name in ("onnx", "program"):
        logits = np.load(tmp_path / f"{name}.npy")
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max(), name
        assert (logits.argmax(1) == expected.argmax(1)).all(), name


def test_predict_a_folder_with_a_corrupt_file(student: Path, tmp_path: Path) -> None:
    images = write_digit_images(tmp_path / "images", 12)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    out = tmp_path / "p.csv"
    result = _python_module(
        "pkkd_lightning.tools.predict", str(student), str(tmp_path / "images"), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"skipped {tmp_path / 'images' / 'corrupt.png'}" in result.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [str(path) for path in images]
    assert all(row["class"] in [str(d) for d in range(10)] and 0 < float(row["confidence"]) <= 1 for row in rows)


def test_op_counter_on_the_student(student: Path) -> None:
    counts = op_counter.main(["--model", str(student)])
    assert counts.input_size == (1, 3, 8, 8)
    assert counts.by_type() == op_counter.count_ops(build_model("resnet20", "adder"), (1, 3, 8, 8)).by_type()

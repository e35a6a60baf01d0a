"""tools.predict: gathering images, batching, CSV output, unreadable files, and the errors it names."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from pkkd_lightning.student_bundle import load_student_bundle
from pkkd_lightning.tools.predict import csv_header, gather_images, main
from tests.tools.conftest import write_digit_images


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_gather_images_recurses_and_matches_suffixes_in_any_case(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.JPG", "a/b/y.webp", "a/b/z.TIFF", "a/notes.txt", "c.bmp", "d.jpeg"):
        (tmp_path / name).touch()
    found = gather_images([tmp_path / "a", tmp_path / "c.bmp", tmp_path / "missing.png"])
    assert found == [tmp_path / "a/b/y.webp", tmp_path / "a/b/z.TIFF", tmp_path / "a/x.JPG", tmp_path / "c.bmp",
                     tmp_path / "missing.png"]  # fmt: skip


def test_csv_header() -> None:
    assert csv_header(None) == ["path", "class", "confidence"]
    assert csv_header(2) == ["path", "class_1", "confidence_1", "class_2", "confidence_2"]


def test_predicts_a_folder_skipping_a_corrupt_file(
    tmp_path: Path, ann_student: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = write_digit_images(tmp_path / "images", 5) + write_digit_images(tmp_path / "images" / "more", 2, ".PNG")
    corrupt = tmp_path / "images" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "preds.csv"
    assert main([str(ann_student), str(tmp_path / "images"), "--output", str(out), "--batch-size", "3"]) == 0
    assert f"skipped {corrupt}" in capsys.readouterr().err
    rows = _rows(out)
    assert sorted(row["path"] for row in rows) == sorted(map(str, images))
    bundle = load_student_bundle(ann_student)
    with torch.no_grad():
        inputs = {}
        for path in images:
            with Image.open(path) as image:
                inputs[str(path)] = bundle.preprocessing(image)
        confidence, index = bundle.model(torch.stack(list(inputs.values()))).softmax(1).max(1)
    expected = dict(zip(inputs, zip(index.tolist(), confidence.tolist())))
    for row in rows:
        assert row["class"] == str(expected[row["path"]][0])  # the class names are "0".."9"
        assert float(row["confidence"]) == pytest.approx(expected[row["path"]][1], abs=1e-6)


def test_topk_columns(tmp_path: Path, ann_student: Path) -> None:
    images = write_digit_images(tmp_path / "images", 3)
    out = tmp_path / "top3.csv"
    assert main([str(ann_student), *map(str, images), "--output", str(out), "--topk", "3"]) == 0
    rows = _rows(out)
    assert list(rows[0]) == csv_header(3) and len(rows) == 3
    for row in rows:
        confidences = [float(row[f"confidence_{k}"]) for k in (1, 2, 3)]
        assert confidences == sorted(confidences, reverse=True)
        assert len({row[f"class_{k}"] for k in (1, 2, 3)}) == 3


def test_classes_are_indices_without_class_names(tmp_path: Path, ann_student: Path) -> None:
    payload = torch.load(ann_student, weights_only=False)
    payload["class_names"] = [f"digit {d}" for d in range(10)]
    torch.save(payload, tmp_path / "named.pt")
    payload["class_names"] = None
    torch.save(payload, tmp_path / "unnamed.pt")
    image = str(write_digit_images(tmp_path / "images", 1)[0])
    for name in ("named", "unnamed"):
        assert main([str(tmp_path / f"{name}.pt"), image, "--output", str(tmp_path / f"{name}.csv")]) == 0
    named, unnamed = _rows(tmp_path / "named.csv")[0], _rows(tmp_path / "unnamed.csv")[0]
    assert named["class"] == f"digit {unnamed['class']}"


def test_exit_status_is_one_when_nothing_could_be_read(
    tmp_path: Path, ann_student: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main([str(ann_student), str(tmp_path / "broken.png"), str(tmp_path / "absent.png")]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "absent.png" in err and "no image could be read" in err


def test_errors_name_the_argument(tmp_path: Path, ann_student: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(write_digit_images(tmp_path, 1)[0])
    with pytest.raises(SystemExit):
        main([str(ann_student), image, "--topk", "11"])
    assert "--topk must be between 1 and the number of classes (10), got 11" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(ann_student), image, "--batch-size", "0"])
    assert "--batch-size must be a positive integer" in capsys.readouterr().err
    old = tmp_path / "old.pt"
    payload = torch.load(ann_student, weights_only=False)
    torch.save({key: payload[key] for key in ("arch", "layer_type", "num_classes", "state_dict")}, old)
    with pytest.raises(SystemExit):
        main([str(old), image])
    assert "records no preprocessing" in capsys.readouterr().err

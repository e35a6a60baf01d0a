"""Classify new images with a trained student and write the predictions as CSV.

``python -m pkkd_lightning.tools.predict STUDENT_OR_CKPT IMAGES... [--output preds.csv] [--topk K]
[--batch-size B] [--device cpu|cuda]``

``STUDENT_OR_CKPT`` is a ``student.pt`` or a PKKD run's ``.ckpt`` (:mod:`pkkd_lightning.student_bundle`); its
recorded preprocessing is applied to each image. ``IMAGES`` are files or folders, searched recursively for
:data:`IMAGE_SUFFIXES` (any case). The CSV has a row per image read, ``path,class,confidence`` (the softmax
probability), or with ``--topk K`` the columns ``class_1,confidence_1,...,class_K,confidence_K``; classes are the
recorded class names, else the logit index. It is written atomically (to standard output without ``--output``).
Files that cannot be read are reported on standard error and skipped; the exit status is 1 only when no image could
be read.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import torch
from PIL import Image

from pkkd_lightning.atomic_io import atomic_open
from pkkd_lightning.student_bundle import StudentBundle, load_student_bundle

#: File suffixes taken from folders (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: What PIL raises for a file it cannot decode (truncated, corrupt, not an image, a decompression bomb).
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def gather_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: each file as given (whatever its suffix), and the files with an
    :data:`IMAGE_SUFFIXES` suffix under each folder, recursively, sorted. A path that does not exist is kept, so
    that reading it reports it."""
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = (p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            images += sorted(found)
        else:
            images.append(item)
    return images


def predict_images(
    bundle: StudentBundle,
    preprocess: Callable[[Image.Image], torch.Tensor],
    paths: Sequence[Path],
    batch_size: int,
    device: torch.device,
    topk: int,
) -> Iterator[tuple[Path, list[tuple[str, float]]]]:
    """Yield ``(path, [(class, confidence), ...])`` (``topk`` pairs, most likely first) for every readable image,
    running ``bundle.model`` on batches of ``batch_size`` images preprocessed with ``preprocess``.

    Unreadable files are reported on standard error by path and skipped.
    """
    model = bundle.model.to(device)
    for start in range(0, len(paths), batch_size):
        batch, tensors = [], []
        for path in paths[start : start + batch_size]:
            try:
                with Image.open(path) as image:
                    tensors.append(preprocess(image))
                batch.append(path)
            except _UNREADABLE as err:
                print(f"skipped {path}: cannot read it as an image ({type(err).__name__}: {err})", file=sys.stderr)
        if not batch:
            continue
        with torch.inference_mode():
            probabilities = model(torch.stack(tensors).to(device)).float().softmax(dim=1)
        confidence, index = probabilities.topk(topk, dim=1)
        for path, row_index, row_confidence in zip(batch, index.tolist(), confidence.tolist()):
            yield path, [(bundle.label(i), c) for i, c in zip(row_index, row_confidence)]


def csv_header(topk: int | None) -> list[str]:
    """``path,class,confidence``, or with ``topk`` the ranked columns ``class_1,confidence_1,...``."""
    if topk is None:
        return ["path", "class", "confidence"]
    return ["path", *[f"{name}_{rank}" for rank in range(1, topk + 1) for name in ("class", "confidence")]]


def write_predictions(rows: Iterable[tuple[Path, list[tuple[str, float]]]], out: IO[str], topk: int | None) -> int:
    """Write :func:`csv_header` and one line per prediction to ``out``; returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(csv_header(topk))
    count = 0
    for path, ranked in rows:
        writer.writerow([str(path), *[value for name, confidence in ranked for value in (name, f"{confidence:.6f}")]])
        count += 1
    return count


def main(args: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 1 when no image could be read)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("student", help="a student.pt or a PKKD run's .ckpt")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--output", help="CSV file to write (default: standard output)")
    parser.add_argument("--topk", type=int, help="write the K most likely classes of each image")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ns = parser.parse_args(args)
    if ns.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {ns.batch_size}")
    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available; use --device cpu")
    try:
        bundle = load_student_bundle(ns.student)
        preprocess = bundle.preprocessing
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    num_classes = bundle.info["num_classes"]
    if ns.topk is not None and not 1 <= ns.topk <= num_classes:
        parser.error(f"--topk must be between 1 and the number of classes ({num_classes}), got {ns.topk}")
    images = gather_images(ns.images)
    rows = predict_images(bundle, preprocess, images, ns.batch_size, torch.device(ns.device), ns.topk or 1)
    if ns.output is None:
        written = write_predictions(rows, sys.stdout, ns.topk)
    else:
        with atomic_open(ns.output, "w", newline="") as out:
            written = write_predictions(rows, out, ns.topk)
    if not written:
        print("no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

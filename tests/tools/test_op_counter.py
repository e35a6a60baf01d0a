"""Operation counts against hand-computed values and the AdderNet paper's ResNet-18 row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

from pkkd_lightning.models import build_model
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.ops.portable import PortableAdder2d, portable_copy
from pkkd_lightning.tools.op_counter import ADD_PJ, MUL_PJ, count_ops, main

#: ResNet-18 stem: 64 filters of 3x7x7 over a 112x112 output.
STEM_MACS = 64 * 3 * 7 * 7 * 112 * 112


def test_hand_counted_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),  # 4*3*9*8*8 = 6912 MACs per image
        Adder2d(4, 2, 1, stride=2),  # 2*4*1*4*4 = 128 MACs per image
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5),  # 160 MACs per image
    )
    counts = count_ops(model, (2, 3, 8, 8))
    totals = counts.by_type()
    assert (totals["conv"].mul, totals["conv"].add) == (2 * 6912, 2 * 6912)
    assert (totals["adder"].mul, totals["adder"].add) == (0, 2 * 2 * 128)
    assert (totals["linear"].mul, totals["linear"].add) == (2 * 160, 2 * 160)
    assert [row.path for row in counts.layers] == ["0", "1", "3"]
    assert counts.energy_pj == pytest.approx(MUL_PJ * 2 * (6912 + 160) + ADD_PJ * 2 * (6912 + 256 + 160))
    assert "adder" in str(counts) and "total" in str(counts)


def test_count_ops_restores_mode_and_removes_hooks() -> None:
    model = build_model("resnet20").train()
    running_mean = model.bn1.running_mean.clone()
    count_ops(model, (1, 3, 32, 32))
    assert model.training and (model.bn1.running_mean == running_mean).all()
    assert not any(m._forward_hooks for m in model.modules())


def test_resnet18_matches_the_addernet_paper() -> None:
    cnn = count_ops(build_model("resnet18", "conv", num_classes=1000)).by_type()
    ann = count_ops(build_model("resnet18", "adder", num_classes=1000)).by_type()
    # "CNN: 1.8G mul + 1.8G add" (AdderNet, Table 1): MACs of all convolutions, each one mul and one add.
    assert cnn["conv"].mul == cnn["conv"].add == pytest.approx(1.8e9, rel=0.02)
    assert cnn["linear"].mul == 512 * 1000 and "adder" not in cnn
    # "ANN: 0 mul + 3.6G add": an adder op is two additions. The paper's row converts every layer; ours keeps
    # the 7x7 stem (118M MACs) and the fc as multiplications, so the adder layers hold 2 * (1.8G - 0.118G).
    assert ann["adder"].mul == 0
    assert ann["adder"].add == 2 * (cnn["conv"].mul - STEM_MACS)
    assert 2 * cnn["conv"].mul == pytest.approx(3.6e9, rel=0.01)
    assert ann["adder"].add == pytest.approx(3.6e9, rel=0.07)
    assert ann["conv"].mul == ann["conv"].add == STEM_MACS
    assert ann["linear"] == cnn["linear"]


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    counts = main(["--model", "resnet20", "--layer-type", "conv", "--input-size", "32", "--per-layer"])
    out = capsys.readouterr().out
    assert "layer3.2.conv2" in out and "total" in out
    # ResNet-20 on CIFAR: about 41M multiply-adds.
    assert counts.mul == pytest.approx(41e6, rel=0.02)


@pytest.mark.parametrize("layer", [nn.Conv2d, Adder2d, PortableAdder2d])
def test_grouped_layers_sum_over_their_group_only(layer: type) -> None:
    model = layer(6, 4, 3, padding=1, groups=2, bias=False)  # every output sums 6 / 2 channels * 9 taps
    (row,) = count_ops(model, (2, 6, 5, 5)).layers
    macs = 2 * 4 * 3 * 9 * 5 * 5
    assert (row.mul, row.add) == ((macs, macs) if layer is nn.Conv2d else (0, 2 * macs))


def test_a_portable_copy_counts_like_the_original() -> None:
    model = build_model("resnet20", "adder")
    original, portable = count_ops(model, (1, 3, 32, 32)), count_ops(portable_copy(model), (1, 3, 32, 32))
    assert portable.by_type() == original.by_type()


def test_command_line_reads_a_student_file(ann_student: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counts = main(["--model", str(ann_student)])
    assert counts.input_size == (1, 3, 8, 8)  # as the file records
    assert counts.by_type() == count_ops(build_model("resnet20", "adder"), (1, 3, 8, 8)).by_type()
    assert "resnet20 (adder, 10 classes)" in capsys.readouterr().out
    assert main(["--model", str(ann_student), "--input-size", "16"]).input_size == (1, 3, 16, 16)
    with pytest.raises(SystemExit):
        main(["--model", str(ann_student.with_name("absent.ckpt"))])
    assert "checkpoint not found" in capsys.readouterr().err

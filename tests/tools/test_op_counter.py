"""Operation counts against hand-computed values and the AdderNet paper's ResNet-18 row."""

from __future__ import annotations

import pytest
import torch.nn as nn

from pkkd_lightning.models import build_model
from pkkd_lightning.ops import Adder2d
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

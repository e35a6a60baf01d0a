"""Reading network weights: exported students, Lightning checkpoints, bare state dicts, and the errors."""

from __future__ import annotations

import pytest
import torch

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import export_student
from pkkd_lightning.models import build_model
from pkkd_lightning.network_io import describe_checkpoint, load_network_weights, network_state_dict, read_checkpoint


def test_missing_and_corrupt_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        read_checkpoint(tmp_path / "nothing.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(corrupt)


def test_a_lightning_checkpoint_gives_the_teacher_if_it_has_one_else_the_student():
    pkkd = PKKDModule("resnet20", 10)
    checkpoint = {"pytorch-lightning_version": "2", "state_dict": pkkd.state_dict()}
    assert network_state_dict(checkpoint).keys() == pkkd.teacher.state_dict().keys()
    torch.testing.assert_close(network_state_dict(checkpoint)["conv1.weight"], pkkd.teacher.conv1.weight)
    cnn = PKKDModule("resnet20", 10, mode="cnn")
    state = network_state_dict({"pytorch-lightning_version": "2", "state_dict": cnn.state_dict()})
    torch.testing.assert_close(state["conv1.weight"], cnn.student.conv1.weight)


def test_an_exported_student_loads_and_a_mismatch_names_both_architectures_briefly(tmp_path):
    path = export_student(PKKDModule("resnet20", 10, mode="cnn"), tmp_path / "cnn.pt")
    assert describe_checkpoint(read_checkpoint(path)) == "arch=resnet20, layer_type=conv, num_classes=10"
    net = build_model("resnet20", "conv", 10)
    load_network_weights(net, path)
    with pytest.raises(ValueError) as error:
        load_network_weights(build_model("resnet32", "conv", 10), path, "arch=resnet32, num_classes=10")
    message = str(error.value)
    assert str(path) in message and "arch=resnet20" in message and "arch=resnet32" in message
    assert "missing keys 72 (layer1.3.conv1.weight" in message and len(message) < 600
    with pytest.raises(
        ValueError, match=r"different shapes 5 \(fc.weight \(10, 64, 1, 1\) vs \(100, 64, 1, 1\), fc_bn.weight"
    ):
        load_network_weights(build_model("resnet20", "conv", 100), path)

"""PKKDModule wiring: modes, parameter groups, loss terms, gradients, adaptive rescaling, export, schedules."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import ProgressiveSchedule, export_student, load_exported_student, schedule_value
from pkkd_lightning.models import build_model
from pkkd_lightning.module import NonFiniteLossError, cosine_factor
from pkkd_lightning.ops import Adder2d


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@pytest.mark.parametrize(
    "mode,student_type,teacher,terms",
    [
        ("cnn", "conv", False, {"student_ce", "student", "loss"}),
        ("ann", "adder", False, {"student_ce", "student", "loss"}),
        ("pkkd", "adder", True, {"student_ce", "student_soft", "feature", "student", "teacher_ce", "teacher", "loss"}),
    ],
)
def test_modes_build_the_right_networks_and_loss_terms(mode, student_type, teacher, terms, batch):
    module = PKKDModule("resnet20", 10, mode=mode)
    has_adder = any(isinstance(m, Adder2d) for m in module.student.modules())
    assert has_adder == (student_type == "adder")
    assert (module.teacher is not None) == teacher
    assert set(module.compute_losses(*batch)) == terms


def test_pkkd_defaults_to_the_last_layer_of_each_stage_and_identity_transforms():
    module = PKKDModule("resnet20", 10)
    assert module.distill_points == ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"]
    for transform in module.feature_transforms:
        x = torch.randn(2, transform.in_channels, 3, 3)
        torch.testing.assert_close(transform(x), x)


def test_exported_student_has_no_more_parameters_than_a_plain_ann():
    module = PKKDModule("resnet20", 10)
    plain = build_model("resnet20", "adder", 10)
    assert count(module.student) == count(plain)
    assert count(module) > count(plain)  # the teacher and the transforms exist only in training


def test_parameter_groups_are_named_and_partition_the_trainable_parameters():
    module = PKKDModule("resnet20", 10)
    module.trainer = L.Trainer(max_steps=10, logger=False, enable_checkpointing=False)
    optimizer = module.configure_optimizers()["optimizer"]
    names = [group["name"] for group in optimizer.param_groups]
    assert names == ["student", "teacher", "feature_transforms (training only)"]
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped == {id(p) for p in module.parameters() if p.requires_grad}


def test_student_loss_never_reaches_the_teacher(batch):
    module = PKKDModule("resnet20", 10)
    module.compute_losses(*batch)["student"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters())
    assert all(p.grad is not None for p in module.feature_transforms.parameters())


def test_teacher_loss_trains_only_the_teacher(batch):
    module = PKKDModule("resnet20", 10)
    module.compute_losses(*batch)["teacher"].backward()
    assert all(p.grad is None for p in module.student.parameters())
    assert all(p.grad is not None for p in module.teacher.parameters())


def test_fixed_teacher_modes_need_a_checkpoint_and_freeze_it(tmp_path):
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        PKKDModule("resnet20", 10, mode="kd")
    cnn = PKKDModule("resnet20", 10, mode="cnn")
    path = export_student(cnn, tmp_path / "cnn.pt")
    for mode, progressive in (("kd", True), ("pkkd", False)):
        module = PKKDModule("resnet20", 10, mode=mode, progressive=progressive, teacher_checkpoint=str(path))
        torch.testing.assert_close(module.teacher.state_dict(), cnn.student.state_dict())
        assert not any(p.requires_grad for p in module.teacher.parameters())
        module.train()
        assert not module.teacher.training  # BatchNorm statistics of a fixed teacher stay fixed


def test_kd_mode_blends_cross_entropy_and_soft_logits(tmp_path, batch):
    path = export_student(PKKDModule("resnet20", 10, mode="cnn"), tmp_path / "cnn.pt")
    module = PKKDModule("resnet20", 10, mode="kd", teacher_checkpoint=str(path), beta=0.3)
    terms = module.compute_losses(*batch)
    torch.testing.assert_close(terms["student"], 0.7 * terms["student_ce"] + 0.3 * terms["student_soft"])


def test_adaptive_rescaling_runs_before_the_optimizer_step(batch):
    module = PKKDModule("resnet20", 10, eta=0.1)
    module.compute_losses(*batch)["loss"].backward()
    module.on_before_optimizer_step(optimizer=None)
    for layer in module.student.modules():
        if isinstance(layer, Adder2d):
            expected = 0.1 * layer.weight.numel() ** 0.5
            assert layer.weight.grad.norm().item() == pytest.approx(expected, rel=1e-5)


def test_non_finite_loss_raises_naming_the_term(batch):
    module = PKKDModule("resnet20", 10, mode="ann")
    x, y = batch
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss term 'student_ce'"):
        module.training_step((bad, y), 0)


def test_exported_student_reproduces_the_trained_student(tmp_path, batch):
    module = PKKDModule("resnet20", 10).eval()
    path = export_student(module, tmp_path / "student.pt")
    restored = load_exported_student(path)
    assert count(restored) == count(build_model("resnet20", "adder", 10))
    with torch.no_grad():
        torch.testing.assert_close(restored(batch[0]), module(batch[0]), rtol=0, atol=0)


def test_bad_mode_and_schedule_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        PKKDModule("resnet20", 10, mode="distill")
    with pytest.raises(ValueError, match="lr_schedule"):
        PKKDModule("resnet20", 10, lr_schedule="step")


@pytest.mark.parametrize(
    "shape,epoch,expected",
    [
        ("constant", 5, 0.1),
        ("linear", 0, 0.1),
        ("linear", 2, 0.1),
        ("linear", 6, 0.3),
        ("linear", 10, 0.5),
        ("linear", 20, 0.5),
        ("cosine", 6, 0.3),
        ("cosine", 4, 0.1 + 0.4 * (1 - 0.5**0.5) / 2),
    ],
)
def test_schedule_values_at_given_epochs(shape, epoch, expected):
    assert schedule_value(shape, 0.1, 0.5, epoch, start_epoch=2, end_epoch=10) == pytest.approx(expected)


def test_schedule_callback_sets_the_attribute_and_round_trips_its_state():
    callback = ProgressiveSchedule("feature_weight", "linear", 1.0, 0.0, start_epoch=0, end_epoch=None)
    assert callback.value_at(epoch=2, max_epochs=5) == pytest.approx(0.5)

    class FakeTrainer:
        current_epoch, max_epochs = 4, 5

    module = PKKDModule("resnet20", 10)
    callback.on_train_epoch_start(FakeTrainer(), module)
    assert module.feature_weight == pytest.approx(0.0)
    restored = ProgressiveSchedule("feature_weight")
    restored.load_state_dict(callback.state_dict())
    assert restored.current == callback.current
    with pytest.raises(ValueError, match="name"):
        ProgressiveSchedule("gamma")


def test_cosine_learning_rate_factor():
    assert cosine_factor(0, 100) == pytest.approx(1.0)
    assert cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(100, 100) == pytest.approx(0.0)

"""PKKDModule wiring: modes, seeded networks, parameter groups, loss terms, gradients, rescaling, export, weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import export_student, load_exported_student
from pkkd_lightning.models import build_model
from pkkd_lightning.modes import Mode
from pkkd_lightning.ops import Adder2d
from pkkd_lightning.validation import choices


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)


POINTS = ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"]
PLAIN_TERMS = {"student_ce", "student/labels", "student", "loss"}
PKKD_TERMS = {"student_ce", "student_soft", "feature", "student", "teacher_ce", "teacher", "loss"}
PKKD_TERMS |= {f"feature/{p}" for p in POINTS} | {f"student/{p}" for p in ("labels", "soft_logits", "features")}


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    return export_student(PKKDModule("resnet20", 10, mode="cnn"), tmp_path_factory.mktemp("cnn") / "cnn.pt")


def test_every_mode_is_covered_here():
    assert set(choices(Mode)) == {"cnn", "ann", "kd", "pkkd"}


@pytest.mark.parametrize(
    "mode,student_type,teacher,terms",
    [
        ("cnn", "conv", False, PLAIN_TERMS),
        ("ann", "adder", False, PLAIN_TERMS),
        (
            "kd",
            "adder",
            True,
            {"student_ce", "student_soft", "student", "loss", "student/labels", "student/soft_logits"},
        ),
        ("pkkd", "adder", True, PKKD_TERMS),
    ],
)
def test_modes_build_the_right_networks_and_loss_terms(mode, student_type, teacher, terms, batch, cnn_export):
    module = PKKDModule("resnet20", 10, mode=mode, teacher_checkpoint=str(cnn_export) if mode == "kd" else None)
    has_adder = any(isinstance(m, Adder2d) for m in module.student.modules())
    assert has_adder == (student_type == "adder")
    assert (module.teacher is not None) == teacher
    assert set(module.compute_losses(*batch)) == terms


def test_student_loss_is_the_sum_of_its_weighted_parts(batch):
    module = PKKDModule("resnet20", 10, beta=0.3, feature_weight=0.2, tau=2.0)
    terms = module.compute_losses(*batch)
    torch.testing.assert_close(terms["student/labels"], 0.7 * terms["student_ce"])
    torch.testing.assert_close(terms["student/soft_logits"], 0.3 * terms["student_soft"])
    torch.testing.assert_close(terms["student/features"], 0.2 * terms["feature"])
    torch.testing.assert_close(terms["feature"], sum(terms[f"feature/{p}"] for p in POINTS))
    torch.testing.assert_close(
        terms["student"], 0.7 * terms["student_ce"] + 0.3 * terms["student_soft"] + 0.2 * terms["feature"]
    )
    torch.testing.assert_close(terms["loss"], terms["student"] + terms["teacher"])


def test_pkkd_defaults_to_the_last_layer_of_each_stage_and_identity_transforms():
    module = PKKDModule("resnet20", 10)
    assert module.distiller.points == POINTS
    for head in module.distiller.heads.values():
        x = torch.randn(2, head.transform.in_channels, 3, 3)
        torch.testing.assert_close(head.transform(x), x)


def test_networks_start_from_the_same_weights_in_every_mode_and_leave_the_global_generator_alone(cnn_export):
    L.seed_everything(7, verbose=False)
    state = torch.get_rng_state()
    cnn, ann = PKKDModule("resnet20", 10, mode="cnn"), PKKDModule("resnet20", 10, mode="ann")
    pkkd = PKKDModule("resnet20", 10, mode="pkkd")
    assert torch.equal(torch.get_rng_state(), state)  # the same batches and augmentations follow in every mode
    torch.testing.assert_close(pkkd.teacher.state_dict(), cnn.student.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(pkkd.student.state_dict(), ann.student.state_dict(), rtol=0, atol=0)
    L.seed_everything(8, verbose=False)
    other = PKKDModule("resnet20", 10, mode="pkkd")
    assert not torch.equal(other.student.layer1[0].conv1.weight, pkkd.student.layer1[0].conv1.weight)


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
    assert names == ["student", "teacher", "feature heads (training only)"]
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert grouped == {id(p) for p in module.parameters() if p.requires_grad}


def test_student_loss_never_reaches_the_teacher(batch):
    module = PKKDModule("resnet20", 10)
    module.compute_losses(*batch)["student"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.student.parameters())
    assert all(p.grad is not None for p in module.distiller.parameters())


def test_teacher_loss_trains_only_the_teacher(batch):
    module = PKKDModule("resnet20", 10)
    module.compute_losses(*batch)["teacher"].backward()
    assert all(p.grad is None for p in module.student.parameters())
    assert all(p.grad is not None for p in module.teacher.parameters())


def test_fixed_teacher_modes_need_a_checkpoint_and_freeze_it(cnn_export):
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        PKKDModule("resnet20", 10, mode="kd")
    cnn, path = load_exported_student(cnn_export), cnn_export
    for mode, training in (("kd", "joint"), ("pkkd", "fixed")):
        module = PKKDModule("resnet20", 10, mode=mode, teacher_training=training, teacher_checkpoint=str(path))
        torch.testing.assert_close(module.teacher.state_dict(), cnn.state_dict())
        assert not any(p.requires_grad for p in module.teacher.parameters())
        module.train()
        assert not module.teacher.training  # BatchNorm statistics of a fixed teacher stay fixed


def test_kd_mode_blends_cross_entropy_and_soft_logits(cnn_export, batch):
    module = PKKDModule("resnet20", 10, mode="kd", teacher_checkpoint=str(cnn_export), beta=0.3)
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


def test_training_step_reports_the_non_finite_terms(batch):
    module = PKKDModule("resnet20", 10, mode="ann")
    module.log = module.log_dict = lambda *args, **kwargs: None
    x, y = batch
    assert module.training_step((x, y), 0)["non_finite_terms"] == []
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    out = module.training_step((bad, y), 0)
    assert out["non_finite_terms"] == ["student_ce", "student/labels", "student", "loss"]


def test_exported_student_reproduces_the_trained_student(tmp_path, batch):
    module = PKKDModule("resnet20", 10).eval()
    path = export_student(module, tmp_path / "student.pt")
    restored = load_exported_student(path)
    assert count(restored) == count(build_model("resnet20", "adder", 10))
    with torch.no_grad():
        torch.testing.assert_close(restored(batch[0]), module(batch[0]), rtol=0, atol=0)


@pytest.mark.parametrize(
    "key,value,accepted",
    [
        ("mode", "distill", "'cnn', 'ann', 'kd', 'pkkd'"),
        ("lr_schedule", "step", "'cosine', 'constant'"),
        ("teacher_training", "frozen", "'joint', 'fixed'"),
        ("adder_backend", "cuda", "'auto', 'reference'"),
        ("init", "xavier", "'official', 'kaiming'"),
        ("beta", 1.5, "[0.0, 1.0]"),
        ("tau", 0.0, "(0.0, inf]"),
        ("feature_weight", -1.0, "[0.0, inf]"),
        ("lr", -0.1, "(0.0, inf]"),
        ("eta", 0.0, "or null"),
        ("num_classes", 1, "an int >= 2"),
    ],
)
def test_bad_arguments_are_refused_at_construction_naming_the_key_and_the_accepted_values(key, value, accepted):
    with pytest.raises(ValueError, match=r"model\." + key if key != "init" else "init") as error:
        PKKDModule(**{"arch": "resnet20", "num_classes": 10, key: value})
    assert accepted in str(error.value) and repr(value) in str(error.value)


def test_loss_weights_are_set_through_a_validating_setter():
    module = PKKDModule("resnet20", 10, beta=0.1)
    module.set_loss_weight("beta", 0.4)
    assert module.loss_weights.beta == 0.4
    with pytest.raises(ValueError, match=r"model\.beta"):
        module.set_loss_weight("beta", 1.2)
    with pytest.raises(ValueError, match="name"):
        module.set_loss_weight("gamma", 0.1)
    assert module.loss_weights.beta == 0.4


class MemoryLogger(Logger):
    """Every ``log_metrics`` call, as ``(step, metrics)``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))


def test_diagnostics_are_logged_once_at_every_distilled_layer_at_the_steps_that_compute_them(batch):
    module = PKKDModule("resnet20", 10, grad_share_every_n_steps=2)
    logger = MemoryLogger()
    trainer = L.Trainer(max_steps=5, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=4))
    share = f"train/grad_share/{POINTS[0]}/features"
    assert [step for step, row in logger.rows if share in row] == [0, 2, 4]  # two batches an epoch: epochs 0-2
    logged = next(row for step, row in logger.rows if share in row)  # step 0
    losses = next(row for step, row in logger.rows if step == 0 and f"train/feature/{POINTS[0]}" in row)
    assert not any(name.startswith(("train/kernel/", "train/grad_share/")) for name in losses)
    for point in POINTS:
        shares = [logged[f"train/grad_share/{point}/{term}"] for term in ("labels", "soft_logits", "features")]
        assert sum(shares) == pytest.approx(1.0) and all(0 < s < 1 for s in shares)
        stats = {k: logged[f"train/kernel/{point}/{k}"] for k in ("loss_before_transform", "loss_after_transform")}
        assert stats["loss_after_transform"] == pytest.approx(losses[f"train/feature/{point}"])
        # rho starts as the identity, so the loss before it is the loss after it
        assert stats["loss_before_transform"] == pytest.approx(stats["loss_after_transform"])
        assert logged[f"train/kernel/{point}/student_spread"] > 0
    assert losses["train/beta"] == module.loss_weights.beta


def test_what_the_transform_reads_is_validated_and_needs_the_transform():
    with pytest.raises(ValueError, match=r"model\.transform_input='standardized'.*model\.linear_transform is false"):
        PKKDModule("resnet20", 10, linear_transform=False, transform_input="standardized")
    with pytest.raises(ValueError, match=r"model\.transform_input"):
        PKKDModule("resnet20", 10, transform_input="whitened")
    module = PKKDModule("resnet20", 10, transform_input="standardized")
    assert isinstance(next(iter(module.distiller.heads.values())).transform[0], torch.nn.BatchNorm2d)

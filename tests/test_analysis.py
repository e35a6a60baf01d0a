"""Analysis helpers: distribution fits, MMD, feature collection, weight-fit table, run loading, metrics CSV."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pkkd_lightning import PKKDModule
from pkkd_lightning.analysis import (
    FeatureSet,
    MetricPoint,
    best_transform,
    channel_share,
    collect_features,
    compare_weight_fits,
    explained_share,
    feature_distance_table,
    fit_gaussian,
    fit_laplace,
    kernel_channel_shares,
    kernel_maps,
    load_datamodule,
    load_module,
    mmd_rbf,
    read_metrics_csv,
    read_run_metrics,
    standardize,
    with_kernel_centering,
)
from pkkd_lightning.cli import cli_main
from pkkd_lightning.data import DigitsDataModule
from pkkd_lightning.ops import Adder2d

REPO = Path(__file__).resolve().parents[1]
SAMPLERS = {
    "laplace": torch.distributions.Laplace(0.5, 2.0),
    "gaussian": torch.distributions.Normal(0.5, 2.0),
}


@pytest.mark.parametrize("family", sorted(SAMPLERS))
def test_fits_pick_the_generating_family(family: str) -> None:
    torch.manual_seed(0)
    x = SAMPLERS[family].sample((20_000,))
    laplace, gaussian = fit_laplace(x), fit_gaussian(x)
    fitted = {"laplace": laplace, "gaussian": gaussian}
    other = "gaussian" if family == "laplace" else "laplace"
    assert fitted[family].mean_log_likelihood > fitted[other].mean_log_likelihood
    assert fitted[family].loc == pytest.approx(0.5, abs=0.05)
    assert fitted[family].scale == pytest.approx(2.0, rel=0.03)


def test_fit_log_likelihoods_have_their_closed_forms() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 7.0])
    laplace, gaussian = fit_laplace(x), fit_gaussian(x)
    assert laplace.loc == 0.0  # torch's median is the lower middle value: still an MLE of a Laplace location
    assert laplace.scale == pytest.approx(13.5 / 6)
    assert laplace.mean_log_likelihood == pytest.approx(-math.log(2 * laplace.scale) - 1)
    assert gaussian.scale == pytest.approx(x.double().std(correction=0).item())
    assert gaussian.mean_log_likelihood == pytest.approx(-0.5 * math.log(2 * math.pi * math.e * gaussian.scale**2))
    density = laplace.log_prob(torch.linspace(-50, 50, 100_001)).exp()
    assert density.sum().item() * 1e-3 == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("fit", [fit_laplace, fit_gaussian])
def test_fits_reject_degenerate_samples(fit) -> None:
    with pytest.raises(ValueError, match="zero spread"):
        fit(torch.full((10,), 3.0))
    with pytest.raises(ValueError, match="at least 2"):
        fit(torch.ones(1))


@pytest.mark.parametrize("bandwidth", [None, 1.0])
def test_mmd_is_zero_for_identical_samples_and_grows_with_a_mean_shift(bandwidth: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(3000, generator=generator), torch.randn(3000, generator=generator)
    assert mmd_rbf(x, x, bandwidth) == 0.0
    distances = [mmd_rbf(x, y + shift, bandwidth) for shift in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert distances[0] < 0.005
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_mmd_accepts_vectors_and_rejects_bad_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=generator)
    assert mmd_rbf(x, x + torch.tensor([1.0, 0.0, 0.0])) > mmd_rbf(x, x + 0.1) > 0
    assert mmd_rbf(torch.zeros(5), torch.zeros(7)) == 0.0
    with pytest.raises(ValueError, match="one dimension"):
        mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(x, x, bandwidth=-1.0)


def _tiny_pkkd() -> PKKDModule:
    torch.manual_seed(0)
    return PKKDModule(arch="resnet20", num_classes=10, mode="pkkd")


def test_collect_features_keys_shapes_and_pairing() -> None:
    module = _tiny_pkkd()
    loader = [(torch.randn(2, 3, 16, 16), torch.tensor([0, 1])) for _ in range(3)]
    with torch.no_grad():  # one training-mode pass initialises the running sigmas
        module.compute_losses(*loader[0])
    kernels = [k for head in module.distiller.heads.values() for k in (head.student_kernel, head.teacher_kernel)]
    scales = [k.scale.scale.clone() for k in kernels]

    full = collect_features(module, loader, max_batches=2, max_samples=None)
    assert module.training  # the train/eval state is restored
    assert list(full) == module.distiller.points == ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"]
    per_image = {"layer1.2.conv2": 16 * 16 * 16, "layer2.2.conv2": 32 * 8 * 8, "layer3.2.conv2": 64 * 4 * 4}
    for path, features in full.items():
        for tensor in vars(features).values():
            assert tensor.shape == (2 * 2 * per_image[path],) and tensor.dtype == torch.float32
        assert (features.student_raw <= 0).all()  # -||x - f||_1
        assert ((features.teacher_kernel > 0) & (features.teacher_kernel <= 1)).all()
    assert [k.scale.scale for k in kernels] == scales  # sigmas frozen

    sampled = collect_features(module, loader, max_samples=500, seed=1)
    assert sampled.keys() == full.keys()
    for head, features in zip(module.distiller.heads.values(), sampled.values()):
        assert all(t.shape == (500,) for t in vars(features).values())
        # The transform starts as the identity, so each kept position pairs a raw output with its own kernel value.
        sigma_a = head.student_kernel.scale.scale
        torch.testing.assert_close(features.student_kernel, torch.exp(features.student_raw / sigma_a))
    again = collect_features(module, loader, max_samples=500, seed=1)
    assert all(torch.equal(a.teacher_raw, b.teacher_raw) for a, b in zip(sampled.values(), again.values()))


def test_collect_features_needs_a_pkkd_module() -> None:
    with pytest.raises(ValueError, match="mode='pkkd'"):
        collect_features(PKKDModule(mode="ann"), [torch.zeros(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="max_batches"):
        collect_features(_tiny_pkkd(), [torch.zeros(1, 3, 8, 8)], max_batches=0)


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_weight_fit_table_covers_every_conv_and_adder_layer(network: str) -> None:
    model = getattr(_tiny_pkkd(), network)
    rows = compare_weight_fits(model)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert [row["layer"] for row in rows] == list(convs)
    for row in rows:
        layer = convs[row["layer"]]
        assert row["kind"] == ("adder" if isinstance(layer, Adder2d) else "conv")
        assert row["numel"] == layer.weight.numel()
        assert row["better"] == ("laplace" if row["laplace_ll"] > row["gaussian_ll"] else "gaussian")
    kinds = {row["layer"]: row["kind"] for row in rows}
    assert kinds["conv1"] == kinds["fc"] == "conv"  # the stem and classifier stay multiplication-based
    assert kinds["layer2.0.conv1"] == ("adder" if network == "student" else "conv")


def test_feature_distance_table_standardises_raw_features() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher_raw = torch.randn(2000, generator=generator)
    teacher_kernel = torch.rand(2000, generator=generator)
    features = {
        "same_shape": FeatureSet(-300.0 + 50.0 * teacher_raw, teacher_raw, teacher_kernel + 0.1, teacher_kernel),
        "other_shape": FeatureSet(teacher_raw.abs().neg(), teacher_raw, teacher_kernel.square(), teacher_kernel),
    }
    rows = {row["layer"]: row for row in feature_distance_table(features)}
    assert list(rows) == ["same_shape", "other_shape"]
    same, other = rows["same_shape"], rows["other_shape"]
    assert same["raw_mmd"] < 1e-6 < other["raw_mmd"]  # scale and offset do not count, shape does
    assert same["kernel_mmd_standardized"] < 1e-6 < same["kernel_mmd"]
    assert same["kernel_mse"] == pytest.approx(0.01)
    assert standardize(teacher_raw).std(correction=0).item() == pytest.approx(1.0)


def test_read_metrics_csv_keeps_each_metrics_own_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,lr-SGD/student,step,train/loss,val/student_acc1,val/teacher_acc1\n"
        "0,,0,2.5,,\n"
        "0,,1,2.0,,\n"
        "0,,1,,0.25,0.5\n"
        ",0.05,2,,,\n"
        "1,,3,1.5,0.75,0.875\n"
    )
    series = read_metrics_csv(path)
    assert series == {
        "lr-SGD/student": [MetricPoint(2, None, 0.05)],
        "train/loss": [MetricPoint(0, 0, 2.5), MetricPoint(1, 0, 2.0), MetricPoint(3, 1, 1.5)],
        "val/student_acc1": [MetricPoint(1, 0, 0.25), MetricPoint(3, 1, 0.75)],
        "val/teacher_acc1": [MetricPoint(1, 0, 0.5), MetricPoint(3, 1, 0.875)],
    }
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="'step'"):
        read_metrics_csv(tmp_path / "other.csv")


def test_read_run_metrics_lets_each_version_replace_what_was_logged_after_its_checkpoint(tmp_path: Path) -> None:
    first, second = tmp_path / "version_2", tmp_path / "version_10"  # in version order, not name order
    first.mkdir(), second.mkdir()
    header = "epoch,step,train/loss,val/student_acc1\n"
    (first / "metrics.csv").write_text(header + "0,0,2.5,\n0,1,,0.25\n1,2,2.0,\n1,3,1.9,\n")
    (second / "metrics.csv").write_text(header + "1,2,1.8,\n1,3,,0.5\n")  # resumed from the checkpoint of step 1
    assert read_run_metrics(tmp_path) == {
        "train/loss": [MetricPoint(0, 0, 2.5), MetricPoint(2, 1, 1.8)],
        "val/student_acc1": [MetricPoint(1, 0, 0.25), MetricPoint(3, 1, 0.5)],
    }


def test_load_module_and_datamodule_from_a_cli_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [
        "fit",
        f"--config={REPO / 'configs' / 'digits_pkkd.yaml'}",
        f"--trainer.default_root_dir={tmp_path}",
        "--test_after_fit=false",
        "--trainer.max_epochs=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.image_size=8",
        "--data.init_args.train_per_class=1",
        "--data.init_args.test_per_class=1",
        "--data.init_args.batch_size=5",
    ]
    monkeypatch.setattr(sys, "argv", ["pkkd"])  # pytest's own arguments are not the CLI's
    cli = cli_main(args, run=True)
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    module = load_module(checkpoint)
    assert isinstance(module, PKKDModule) and not module.training
    assert module.device == torch.device("cpu")
    for key, value in cli.model.state_dict().items():
        torch.testing.assert_close(module.state_dict()[key], value.cpu())
    datamodule = load_datamodule(checkpoint)
    assert isinstance(datamodule, DigitsDataModule) and datamodule.image_size == 8 and datamodule.batch_size == 5
    series = read_metrics_csv(checkpoint.parents[1] / "metrics.csv")
    assert {"train/loss", "val/student_acc1", "val/teacher_acc1"} <= series.keys()


def test_channel_share_is_zero_for_identical_channels_and_near_one_for_independent_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    same = torch.randn(4, 1, 5, 5, generator=gen).expand(4, 8, 5, 5)
    assert channel_share(same) == pytest.approx(0.0, abs=1e-12)
    independent = torch.randn(4, 64, 5, 5, generator=gen)
    assert channel_share(independent) == pytest.approx((63 / 64) ** 0.5, abs=0.02)


def test_kernel_channel_shares_cover_every_point_and_restore_the_mode() -> None:
    module = _tiny_pkkd()
    loader = [(torch.randn(2, 3, 16, 16), torch.tensor([0, 1])) for _ in range(2)]
    with torch.no_grad():
        module.compute_losses(*loader[0])  # initialises the running sigmas
    rows = kernel_channel_shares(module, loader)
    assert [r["layer"] for r in rows] == module.distiller.points and module.training
    assert all(0 <= r["student"] <= 1.5 and 0 <= r["teacher"] <= 1.5 for r in rows)
    with pytest.raises(ValueError, match="mode='pkkd'"):
        kernel_channel_shares(PKKDModule(mode="ann"), loader)


def test_explained_share_is_one_for_the_teacher_itself_and_zero_for_its_channel_means() -> None:
    teacher = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    assert explained_share(teacher, teacher) == pytest.approx(1.0)
    assert explained_share(teacher.mean(dim=(0, 2, 3), keepdim=True).expand_as(teacher), teacher) == pytest.approx(0.0)
    assert explained_share(teacher.mean().expand_as(teacher), teacher) < 0  # one mean for all channels is worse


def test_best_transform_is_the_least_squares_1x1_affine_fit() -> None:
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    weight, bias = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen)
    exact = torch.einsum("ts,nshw->nthw", weight, student) + bias.double().view(1, -1, 1, 1)
    torch.testing.assert_close(best_transform(student, exact), exact)
    assert explained_share(best_transform(student, exact), exact) == pytest.approx(1.0)
    # Against the normal equations, one row per (image, position) written out by hand.
    teacher = exact + torch.randn(exact.shape, generator=gen, dtype=torch.float64)
    rows = [[*student[n, :, i, j].tolist(), 1.0] for n in range(3) for i in range(4) for j in range(4)]
    design = torch.tensor(rows, dtype=torch.float64)
    target = torch.tensor([teacher[n, :, i, j].tolist() for n in range(3) for i in range(4) for j in range(4)])
    coef = torch.linalg.solve(design.T @ design, design.T @ target.double())
    expected = (design @ coef).reshape(3, 4, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(best_transform(student, teacher), expected)
    assert 0 < explained_share(expected, teacher) < 1


def test_kernel_maps_before_and_after_the_transform_and_a_centred_copy() -> None:
    module = _tiny_pkkd()
    loader = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])) for _ in range(2)]
    with torch.no_grad():
        module.compute_losses(*loader[0])  # initialises the running sigmas
    maps = kernel_maps(module, loader)
    assert list(maps) == module.distiller.points and module.training
    for point in maps.values():
        assert point.student.shape == point.student_untransformed.shape == (8, *point.teacher.shape[1:])
        # rho starts as the identity
        torch.testing.assert_close(point.student, point.student_untransformed)
    centred = with_kernel_centering(module, "channel", loader[0][0])
    assert centred.hparams.centering == "channel" and module.hparams.centering == "none"
    same = {k: v for k, v in module.state_dict().items() if ".scale." not in k}
    for key, value in same.items():
        torch.testing.assert_close(centred.state_dict()[key], value)
    head = next(iter(centred.distiller.heads.values()))
    # The running scale of standardised distances is their mean absolute value, below 1 (their RMS is 1).
    assert 0.3 < float(head.teacher_kernel.scale.scale) < 1 and bool(head.teacher_kernel.scale.initialized)
    teacher = kernel_maps(centred, loader)[module.distiller.points[0]].teacher
    assert channel_share(teacher) > 2 * channel_share(maps[module.distiller.points[0]].teacher)

"""Every experiment config in ``configs/`` parses, prints, and instantiates its model and DataModule offline.

Experiment configs are the YAML files directly in ``configs/``; ``configs/data/`` holds the DataModule fragments
they reference. Nothing here calls ``setup``, so the data directories need not exist. The names follow
``configs/README.md`` and the tests hold the files to them, so a config's name never lies about what it trains.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import yaml

from pkkd_lightning.callbacks import LossWeightSchedule, PreciseBatchNorm
from pkkd_lightning.cli import PKKDLightningCLI, cli_main
from pkkd_lightning.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
)
from pkkd_lightning.module import PKKDModule
from tests.data.conftest import write_image_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
EXPERIMENTS = sorted(CONFIG_DIR.glob("*.yaml"))
FRAGMENTS = sorted((CONFIG_DIR / "data").glob("*.yaml"))

#: ``<data>_<ann|cnn><arch>[_plain]``: ``ann`` alone is PKKD (the users' "PKKD ANN-20"), ``_plain`` AdderNet.
PAPER_NAME = re.compile(
    r"(?P<data>cifar10|cifar100|imagenet)_(?P<net>ann|cnn)(?P<arch>20|32|vgg|18|50)(?P<plain>_plain)?"
)
ARCHS = {"20": "resnet20", "32": "resnet32", "vgg": "vgg_small", "18": "resnet18", "50": "resnet50"}
DATA = {"cifar10": CIFAR10DataModule, "cifar100": CIFAR100DataModule, "imagenet": ImageNetDataModule}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def expected_run(stem: str) -> dict | None:
    """What a paper config's name says it runs, or None for other configs (the demo)."""
    match = PAPER_NAME.fullmatch(stem)
    if match is None:
        return None
    mode = "cnn" if match["net"] == "cnn" else ("ann" if match["plain"] else "pkkd")
    return {"data": match["data"], "arch": ARCHS[match["arch"]], "mode": mode}


def print_config(*args: str) -> dict:
    """The full config ``--print_config`` writes, as a dict (it exits 0 after printing)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--print_config"], run=False)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def instantiate(config: Path, root: Path, *overrides: str) -> PKKDLightningCLI:
    """Model, DataModule, callbacks and Trainer of ``config`` (no ``setup``, no training).

    The ImageNet configs ask for 8 GPUs; ``accelerator cpu`` lets their Trainer (DDP, 8 devices, bf16) be built
    on any machine without launching processes.
    """
    cpu = ["--trainer.accelerator", "cpu"] if config.stem.startswith("imagenet") else []
    return cli_main(["--config", str(config), "--trainer.default_root_dir", str(root), *cpu, *overrides], run=False)


def test_the_paper_table_has_every_config():
    expected = {
        f"{data}_{net}{arch}{suffix}"
        for data, archs in (
            ("cifar10", ("20", "32", "vgg")),
            ("cifar100", ("20", "32", "vgg")),
            ("imagenet", ("18", "50")),
        )
        for arch in archs
        for net, suffix in (("cnn", ""), ("ann", "_plain"), ("ann", ""))
    }
    present = {path.stem for path in EXPERIMENTS}
    assert expected <= present, f"missing configs: {sorted(expected - present)}"
    assert present - expected == {"digits_pkkd", "imagefolder_pkkd"}, "a new config needs a naming rule in "
    "configs/README.md and here"


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_prints_a_full_config_matching_its_name(config: Path):
    printed = print_config("--config", str(config))
    assert printed["trainer"]["default_root_dir"] == f"runs/{config.stem}"
    expected = expected_run(config.stem)
    if expected is None:
        return
    assert printed["model"]["arch"] == expected["arch"]
    assert printed["model"]["mode"] == expected["mode"]
    assert printed["data"]["class_path"] == f"pkkd_lightning.data.{DATA[expected['data']].__name__}"
    # The paper's optimiser (docs/method.md section 4): SGD momentum 0.9 from lr 0.1, cosine.
    assert printed["model"]["lr"] == 0.1 and printed["model"]["momentum"] == 0.9
    assert printed["model"]["lr_schedule"] == "cosine"
    if expected["data"] != "imagenet":
        assert printed["trainer"]["max_epochs"] == 400 and printed["model"]["weight_decay"] == 5e-4
        assert printed["data"]["init_args"]["batch_size"] == 256 and printed["trainer"]["devices"] == 1
    else:
        assert printed["trainer"]["strategy"] == "ddp" and printed["trainer"]["sync_batchnorm"] is True
        global_batch = printed["data"]["init_args"]["batch_size"] * printed["trainer"]["devices"]
        assert global_batch == 256, "model.lr 0.1 is set for a global batch of 256"


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_instantiates_model_and_datamodule_offline(config: Path, tmp_path: Path):
    overrides = []
    if config.stem == "imagefolder_pkkd":  # its number of classes is read from the class folders
        write_image_tree(tmp_path / "tree" / "train", ["cat", "dog", "owl"], per_class=1)
        overrides = ["--data.init_args.data_dir", str(tmp_path / "tree")]
    cli = instantiate(config, tmp_path, *overrides)
    model, data = cli.model, cli.datamodule
    assert isinstance(model, PKKDModule)
    schedules = [cb for cb in cli.trainer.callbacks if isinstance(cb, LossWeightSchedule)]
    if model.hparams.mode == "pkkd":
        # beta moves, lambda (feature_weight) stays constant: the schedule documented in configs/README.md.
        assert [cb.name for cb in schedules] == ["beta"]
        assert model.teacher is not None and model.distiller.points
    else:
        assert schedules == []
    expected = expected_run(config.stem)
    if config.stem == "imagefolder_pkkd":
        assert isinstance(data, ImageFolderDataModule) and model.hparams.num_classes == data.num_classes == 3
        return
    if expected is None:
        assert isinstance(data, DigitsDataModule)
        return
    assert type(data) is DATA[expected["data"]]
    assert model.hparams.num_classes == NUM_CLASSES[expected["data"]] == data.num_classes
    assert str(data.data_dir) == f"data/{expected['data']}"
    assert data.train_set is None, "instantiating must not touch the data"


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: p.stem)
def test_data_fragment_composes_from_the_command_line(fragment: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # on the command line, a config path is relative to the working directory
    data_dir = tmp_path / "elsewhere"
    args = ["--data", f"configs/data/{fragment.name}", "--data.init_args.data_dir", str(data_dir)]
    cli = instantiate(CONFIG_DIR / "cifar10_cnn20.yaml", tmp_path, *args)
    assert type(cli.datamodule) is DATA[fragment.stem]
    assert cli.datamodule.data_dir == data_dir
    assert cli.model.hparams.num_classes == NUM_CLASSES[fragment.stem]


def test_references_inside_a_config_resolve_relative_to_that_config(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repo root: `data: data/cifar100.yaml` must still be found
    cli = instantiate(CONFIG_DIR / "cifar100_ann20_plain.yaml", tmp_path)
    assert type(cli.datamodule) is CIFAR100DataModule
    assert cli.model.hparams.num_classes == 100


def test_precise_batchnorm_is_added_from_the_command_line(tmp_path: Path):
    config = CONFIG_DIR / "cifar10_ann20.yaml"
    cli = instantiate(config, tmp_path, "--trainer.callbacks+=PreciseBatchNorm", "--trainer.callbacks.num_batches=5")
    precise = [cb for cb in cli.trainer.callbacks if isinstance(cb, PreciseBatchNorm)]
    assert [cb.num_batches for cb in precise] == [5]
    assert any(isinstance(cb, LossWeightSchedule) for cb in cli.trainer.callbacks), "the config's own callback"


def test_the_demo_re_estimates_batchnorm_before_every_validation(tmp_path: Path):
    cli = instantiate(CONFIG_DIR / "digits_pkkd.yaml", tmp_path)
    assert [cb.num_batches for cb in cli.trainer.callbacks if isinstance(cb, PreciseBatchNorm)] == [4]


@pytest.mark.parametrize(
    "key,literal",
    [
        ("model.mode", "Mode"),
        ("model.init", "InitScheme"),
        ("model.adder_backend", "AdderBackendName"),
        ("model.teacher_training", "TeacherTraining"),
        ("model.feature_space", "FeatureSpace"),
        ("model.centering", "Centering"),
        ("model.lr_schedule", "LrSchedule"),
    ],
)
def test_help_lists_every_accepted_value_of_each_choice(capsys, key: str, literal: str):
    from pkkd_lightning import distill, models, modes, optim
    from pkkd_lightning.ops import backends
    from pkkd_lightning.validation import choices

    owner = next(m for m in (models, modes, distill, optim, backends) if hasattr(m, literal))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    assert f"--{key} {{{','.join(choices(getattr(owner, literal)))}}}" in capsys.readouterr().out


def test_help_says_what_model_arch_accepts(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "timm:<name>" in help_text and "<module>:<function>" in help_text and "register_model" in help_text

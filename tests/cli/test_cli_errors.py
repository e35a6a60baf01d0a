"""Mistakes users make on the command line fail early, with a message that names what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pkkd_lightning.cli import cli_main

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "digits_pkkd.yaml")


def parse_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Parse ``fit --config <demo> *args``; assert it exits non-zero and return the error output.

    ``--print_config`` makes a parse that unexpectedly succeeds exit 0 instead of training.
    """
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", DEMO, *args, "--print_config"])
    assert exit_info.value.code not in (0, None)
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--model.lrr", "0.1"], ["lrr"]),
        (["--data.init_args.image_sise", "8"], ["image_sise"]),
        (["--model.mode", "foo"], ["mode", "foo"]),
        (["--model.lr", "abc"], ["lr", "abc"]),
        (["--trainer.max_epochs", "many"], ["max_epochs", "many"]),
    ],
    ids=["misspelt-model-key", "misspelt-data-key", "invalid-mode", "invalid-lr", "invalid-trainer-value"],
)
def test_bad_option_exits_nonzero_naming_it(capsys, args: list[str], named: list[str]):
    error = parse_error(capsys, *args)
    for word in named:
        assert word in error


def test_invalid_mode_lists_the_accepted_values(capsys):
    error = parse_error(capsys, "--model.mode", "foo")
    assert all(mode in error for mode in ("cnn", "ann", "kd", "pkkd"))


def test_misspelt_key_in_a_config_file_is_named(capsys, tmp_path: Path):
    config = tmp_path / "typo.yaml"
    config.write_text("modle:\n  arch: resnet20\n")
    assert "modle" in parse_error(capsys, "--config", str(config))


def test_missing_ckpt_path_is_named(tmp_path: Path):
    missing = tmp_path / "runs" / "nothing_here.ckpt"
    with pytest.raises(FileNotFoundError, match="nothing_here.ckpt"):
        cli_main(["test", "--config", DEMO, "--ckpt_path", str(missing)])


def test_corrupt_ckpt_path_is_named(tmp_path: Path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.ckpt"):
        cli_main(["test", "--config", DEMO, "--ckpt_path", str(corrupt)])


def test_a_file_that_is_not_a_lightning_checkpoint_is_named(tmp_path: Path):
    exported = tmp_path / "student.pt"
    torch.save({"arch": "resnet20", "state_dict": {}}, exported)
    with pytest.raises(ValueError, match="student.pt is not a Lightning checkpoint"):
        cli_main(["test", "--config", DEMO, "--ckpt_path", str(exported)])


def test_the_real_command_exits_nonzero_and_prints_the_bad_key(run_cli):
    result = run_cli("fit", "--config", "configs/digits_pkkd.yaml", "--model.lrr", "0.1")
    assert result.returncode != 0
    assert "lrr" in result.stderr
    assert not result.stdout.count("Epoch"), "nothing may train after a parse error"


def test_malformed_yaml_is_reported_against_its_file(tmp_path: Path):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  arch: resnet20\n   mode: pkkd\n")
    with pytest.raises(ValueError, match=rf"(?s)config file {config} is not valid YAML.*line 3"):
        cli_main(["fit", "--config", DEMO, "--config", str(config), "--print_config"])


def test_a_malformed_group_file_referenced_by_a_config_is_named(tmp_path: Path):
    (tmp_path / "data.yaml").write_text("class_path: [unclosed\n")
    config = tmp_path / "experiment.yaml"
    config.write_text("data: data.yaml\n")
    with pytest.raises(ValueError, match=r"data\.yaml is not valid YAML"):
        cli_main(["fit", "--config", str(config), "--print_config"])


def test_num_classes_in_a_config_file_is_refused_not_dropped(tmp_path: Path):
    config = tmp_path / "five.yaml"
    config.write_text("model:\n  num_classes: 5\n")
    with pytest.raises(ValueError, match=r"sets model\.num_classes, but the number of classes follows the data"):
        cli_main(["fit", "--config", DEMO, "--config", str(config), "--print_config"])


@pytest.mark.parametrize("flag", ["--optimizer", "--lr_scheduler"])
def test_optimizer_and_scheduler_flags_are_refused_with_the_keys_that_exist(capsys, flag: str):
    error = parse_error(capsys, flag, "Adam")
    assert f"{flag} is not supported" in error and "model.lr" in error and "model.lr_schedule" in error


def test_bad_values_fail_before_training_naming_the_key(capsys):
    for args, key in ([("--model.beta", "1.5"), "model.beta"], [("--model.tau", "0"), "model.tau"],
                      [("--model.lr", "-0.1"), "model.lr"]):  # fmt: skip
        with pytest.raises(ValueError, match=rf"`{key}` must be"):
            cli_main(["fit", "--config", DEMO, *args, "--trainer.max_steps", "1"])

"""Nothing silently wrong: runs resume only when asked, never share a folder, and test only what they were trained
for (docs/reliability.md, "Nothing silently wrong"). Every case goes through ``cli.py`` as users run it, with the
default callbacks, on the demo config made tiny (8x8 digits, 4 training batches per epoch).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pkkd_lightning.cli import cli_main
from pkkd_lightning.network_io import read_checkpoint
from tests.cli.conftest import REPO_ROOT
from tests.data.conftest import write_image_tree

pytestmark = pytest.mark.slow

DEMO = "configs/digits_pkkd.yaml"
DEMO_PATH = str(REPO_ROOT / DEMO)
TINY = (
    *("--data.init_args.image_size", "8", "--data.init_args.train_per_class", "16"),
    *("--data.init_args.test_per_class", "4", "--data.init_args.batch_size", "32"),
    *("--trainer.enable_progress_bar", "false", "--model.grad_share_every_n_steps", "0"),
    *("--test_after_fit", "false"),
)
#: Warnings every fresh run used to print, none of them true for it.
MISLEADING = ("was called without a model", "will be deleted", "exists and is not empty", "no last checkpoint")


def fit(run_cli, root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("fit", "--config", DEMO, *TINY, "--trainer.default_root_dir", str(root), *args)


@pytest.fixture(scope="module")
def finished_run(run_cli, tmp_path_factory) -> Path:
    """A finished 1-epoch run in a fixed checkpoint folder: that folder, holding ``last.ckpt`` and a best."""
    root = tmp_path_factory.mktemp("finished")
    result = fit(run_cli, root, "--trainer.max_epochs", "1", "--last_checkpoint.dirpath", str(root / "fixed"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "fixed"


def test_a_fresh_fit_refuses_a_fixed_folder_holding_another_runs_checkpoint(run_cli, finished_run, tmp_path):
    before = (finished_run / "last.ckpt").read_bytes()
    for section in ("last_checkpoint", "preemption"):
        result = fit(run_cli, tmp_path, "--trainer.max_epochs", "1", f"--{section}.dirpath", str(finished_run))
        assert result.returncode != 0
        assert f"checkpoint folder {finished_run} already holds checkpoints" in result.stderr
        assert "--ckpt_path last" in result.stderr
    assert (finished_run / "last.ckpt").read_bytes() == before
    assert not list(tmp_path.glob("version_*"))  # refused before a log folder was made


def test_ckpt_path_last_resumes_the_newest_checkpoint_or_starts_a_new_run(run_cli, finished_run, tmp_path):
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "last.ckpt").write_bytes((finished_run / "last.ckpt").read_bytes())
    resumed = fit(
        run_cli, tmp_path, "--trainer.max_epochs", "1", "--last_checkpoint.dirpath", str(fixed), "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the newest checkpoint in {fixed}: {fixed / 'last.ckpt'}" in resumed.stderr
    # A requeued job's first start: the same command with nothing to resume trains a new run from step 0.
    first = fit(run_cli, tmp_path / "new", "--trainer.max_epochs", "1", "--ckpt_path", "last")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no last.ckpt or preempted.ckpt" in first.stderr and "starting a new run" in first.stderr
    assert read_checkpoint(tmp_path / "new" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_two_fits_started_together_get_a_folder_each_and_no_false_warning(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    command = [sys.executable, "cli.py", "fit", "--config", DEMO, *TINY, "--trainer.default_root_dir", str(tmp_path)]
    runs = [
        subprocess.Popen([*command, "--trainer.max_epochs", str(epochs)], cwd=REPO_ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for epochs in (1, 2)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    folders = sorted(tmp_path.glob("version_*"))
    assert [f.name for f in folders] == ["version_0", "version_1"]
    steps = sorted(read_checkpoint(f / "checkpoints" / "last.ckpt")["global_step"] for f in folders)
    assert steps == [4, 8]
    for folder in folders:
        epochs = read_checkpoint(folder / "checkpoints" / "last.ckpt")["epoch"] + 1
        assert f"max_epochs: {epochs}" in (folder / "config.yaml").read_text()  # its own config, not the other's
        rows = (folder / "metrics.csv").read_text().splitlines()[1:]
        assert len([r for r in rows if r.split(",")[0] != ""]) >= epochs  # its own epochs' rows only
        assert (folder / "student.pt").is_file()
    for _, stderr in outputs:
        assert not [warning for warning in MISLEADING if warning in stderr], stderr[-3000:]


@pytest.fixture(scope="module")
def cifar_like_tree(tmp_path_factory) -> Path:
    """A CIFAR-10 ImageFolder tree of random 32x32 images (2 per class in each split)."""
    root = tmp_path_factory.mktemp("cifar_tree")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for split in ("train", "test"):
        write_image_tree(root / split, classes, per_class=2)
    return root


def test_a_checkpoint_is_not_tested_on_other_data(run_cli, finished_run, cifar_like_tree, tmp_path):
    ckpt = str(finished_run / "last.ckpt")
    other_size = run_cli("test", "--config", DEMO, *TINY, "--data.init_args.image_size", "16", "--ckpt_path", ckpt,
                         "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert other_size.returncode != 0
    assert "data.init_args.image_size 8 vs 16" in other_size.stderr and "--allow_other_data" in other_size.stderr
    cifar = ("--config", "configs/cifar10_cnn20.yaml", "--model.arch", "resnet20", "--model.mode", "pkkd")
    cifar += ("--data.init_args.data_dir", str(cifar_like_tree), "--trainer.accelerator", "cpu")
    cifar += ("--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path))
    other = run_cli("test", *cifar, "--ckpt_path", ckpt)
    assert other.returncode != 0
    assert "pkkd_lightning.data.DigitsDataModule vs pkkd_lightning.data.CIFAR10DataModule" in other.stderr
    allowed = run_cli("test", *cifar, "--ckpt_path", ckpt, "--allow_other_data", "true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "test/student_acc1" in allowed.stdout


def test_a_checkpoint_records_its_class_names(finished_run):
    assert read_checkpoint(finished_run / "last.ckpt")["data_classes"] == [str(d) for d in range(10)]


def test_a_resume_that_changes_the_settings_or_the_length_is_refused(run_cli, finished_run, tmp_path):
    ckpt = str(finished_run / "last.ckpt")
    lower_lr = fit(run_cli, tmp_path, "--trainer.max_epochs", "1", "--model.lr", "0.01", "--ckpt_path", ckpt)
    assert lower_lr.returncode != 0
    assert "model.lr: checkpoint 0.1, config 0.01" in lower_lr.stderr and f"--warm_start {ckpt}" in lower_lr.stderr
    longer = fit(run_cli, tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", ckpt)
    assert longer.returncode != 0
    assert "this fit runs 12 optimisation steps" in longer.stderr and "over 4" in longer.stderr


def test_warm_start_trains_a_new_run_from_the_weights_with_new_settings(run_cli, finished_run, tmp_path):
    ckpt = str(finished_run / "last.ckpt")
    new_lr = ("--model.lr", "0.01", "--trainer.max_epochs", "2")
    both = fit(run_cli, tmp_path, *new_lr, "--warm_start", ckpt, "--ckpt_path", ckpt)
    assert both.returncode != 0 and "give one of them" in both.stderr
    # One step at lr 0 (a constant schedule): the weights stay those of the checkpoint, BatchNorm statistics apart.
    frozen = fit(run_cli, tmp_path, "--warm_start", ckpt, "--model.lr", "1e-30", "--model.lr_schedule", "constant",
                 "--model.eta", "1e-30", "--trainer.max_steps", "1", "--model.weight_decay", "0")  # fmt: skip
    assert frozen.returncode == 0, frozen.stderr[-3000:]
    assert f"warm_start: a new run from the weights of {ckpt}" in frozen.stderr
    started = read_checkpoint(tmp_path / "version_0" / "checkpoints" / "last.ckpt")
    assert started["global_step"] == 1 and started["hyper_parameters"]["lr"] == 1e-30
    source = read_checkpoint(ckpt)["state_dict"]
    torch.testing.assert_close(started["state_dict"]["student.fc.weight"], source["student.fc.weight"])
    trained = fit(run_cli, tmp_path, "--warm_start", ckpt, *new_lr)
    assert trained.returncode == 0, trained.stderr[-3000:]


def test_a_divergence_in_finite_numbers_saves_nothing_and_says_how_to_restart(run_cli, tmp_path):
    # A huge adaptive learning rate: the state leaves 1e12 in finite numbers (BatchNorm's running variances reach
    # ~1e15), a state that tests at chance and cannot be trained back. It must not be saved, let alone named as good.
    # The loss bound is lifted so that the state check is what stops the run: which of the two trips first, and which
    # tensor is out of range first, depends on the thread count's summation order.
    result = fit(run_cli, tmp_path, "--trainer.max_epochs", "3", "--model.eta", "1e9",
                 "--divergence_guard.max_loss", "1e30")  # fmt: skip
    assert result.returncode != 0 and "DivergenceError" in result.stderr
    out_of_range = r"student\.\S+ \(largest magnitude \S+\) is not finite or beyond divergence_guard\.max_state=1e\+12"
    assert re.search(out_of_range, result.stderr), result.stderr[-3000:]
    assert "No checkpoint was written before this point" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.max_epochs", "0"], "trainer.max_epochs=0 trains nothing"),
        (["--trainer.max_epochs", "-1"], "cannot be used with model.lr_schedule=cosine"),
        (["--model.sigma_ann", "0"], "model.sigma_ann"),
    ],
    ids=["max_epochs-0", "max_epochs-unbounded-cosine", "sigma_ann-0"],
)
def test_settings_that_cannot_train_are_refused_before_anything_runs(args, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        cli_main(["fit", "--config", DEMO_PATH, *TINY, *args, "--trainer.default_root_dir", str(tmp_path)])
    assert not list(tmp_path.glob("version_*"))


def test_an_unbounded_run_with_a_constant_rate_trains(tmp_path):
    unbounded = ("--trainer.max_epochs", "-1", "--model.lr_schedule", "constant", "--trainer.max_time", "00:00:00:03")
    cli = cli_main(["fit", "--config", DEMO_PATH, *TINY, *unbounded, "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.max_epochs == -1 and cli.trainer.global_step > 0


def test_a_misspelt_option_is_not_taken_for_a_prefix(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", DEMO_PATH, "--trainer.max_epoch", "3", "--print_config"])
    assert "unrecognized arguments: --trainer.max_epoch" in capsys.readouterr().err


def test_a_key_repeated_in_a_config_file_is_refused_naming_both_lines(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("model:\n  lr: 0.5\n  mode: ann\n  lr: 0.001\n")
    with pytest.raises(ValueError, match=rf"config file {config}: key 'lr' appears twice .* lines 2 and 4"):
        cli_main(["fit", "--config", DEMO_PATH, "--config", str(config), "--print_config"])
    blocks = tmp_path / "blocks.yaml"
    blocks.write_text("model:\n  mode: ann\ntrainer:\n  max_epochs: 1\nmodel:\n  lr: 0.01\n")
    with pytest.raises(ValueError, match="key 'model' appears twice .* lines 1 and 5"):
        cli_main(["fit", "--config", DEMO_PATH, "--config", str(blocks), "--print_config"])


def test_a_damaged_image_is_named_with_its_path(run_cli, cifar_like_tree, tmp_path):
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-r", str(cifar_like_tree), str(tree)], check=True)
    damaged = tree / "train" / "cat" / "0000.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])
    args = ("--config", "configs/cifar10_cnn20.yaml", "--data.init_args.data_dir", str(tree), "--trainer.accelerator")
    args += ("cpu", "--trainer.max_epochs", "1", "--data.init_args.batch_size", "4", "--trainer.enable_progress_bar")
    result = run_cli("fit", *args, "false", "--trainer.default_root_dir", str(tmp_path / "runs"))
    assert result.returncode != 0
    assert f"cannot read image '{damaged}'" in result.stderr


def test_a_write_killed_half_way_leaves_the_previous_checkpoint_to_resume(run_cli, finished_run, tmp_path):
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    last = fixed / "last.ckpt"
    last.write_bytes((finished_run / "last.ckpt").read_bytes())
    before = last.read_bytes()
    writer = (
        "import sys, time\nfrom pkkd_lightning.atomic_io import atomic_write\n"
        "def half(out):\n    out.write(b'x' * 4096); out.flush(); print('writing', flush=True); time.sleep(600)\n"
        "atomic_write(sys.argv[1], half)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", writer, str(last)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert last.read_bytes() == before
    resumed = fit(
        run_cli, tmp_path, "--trainer.max_epochs", "1", "--last_checkpoint.dirpath", str(fixed), "--ckpt_path", "last"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stderr

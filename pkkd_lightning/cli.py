"""The command line: LightningCLI over :class:`PKKDModule` and any LightningDataModule.

``python cli.py {fit,validate,test,predict} --config configs/<experiment>.yaml [--ckpt_path ...]``; every
``__init__`` argument of the module, the data module and the Trainer is a config key (``--print_config`` shows
them all). On top of Lightning's defaults every run gets: TensorBoard and CSV logs in one version folder under
``trainer.default_root_dir``, a best-model checkpoint on ``val/student_acc1`` that survives a resume
(``checkpoint``, :class:`~pkkd_lightning.callbacks.BestCheckpoint`), a ``last.ckpt`` rewritten at every epoch end
for resuming (``last_checkpoint``; Lightning's own ``save_last`` writes only when the monitored checkpoint
improves), a guard that stops a diverging run before a ruined state is saved (``divergence_guard``), an export of
the plain student when fitting ends (``export``), a checkpoint on SIGTERM (``preemption``; the process then exits
with code 143), and a CSV of predictions for ``predict`` (``prediction_writer``). With ``test_after_fit: true``
``fit`` ends by testing the best checkpoint.

Mistakes fail before anything runs, naming the file or key: malformed YAML, ``model.num_classes`` in a config
(it follows the data module), ``--optimizer``/``--lr_scheduler`` (the module configures its own SGD and
schedule), a checkpoint that is not a Lightning checkpoint, or one whose architecture differs from the config's.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pkkd_lightning.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    ExportStudent,
    PredictionWriter,
    PreemptionCheckpoint,
)
from pkkd_lightning.module import PKKDModule
from pkkd_lightning.network_io import read_checkpoint

DEFAULT_ROOT_DIR = "runs/default"
#: Exit status of a run stopped by SIGTERM (128 + 15, the shell's convention), so job schedulers can requeue it.
PREEMPTED_EXIT_CODE = 143
_SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
#: Module arguments that decide the networks' structure: a checkpoint and the config must agree on them.
_STRUCTURAL_KEYS = ("arch", "mode", "teacher_training", "distill_points", "linear_transform")
_UNSUPPORTED_FLAGS = ("--optimizer", "--lr_scheduler")


def default_loggers(root_dir: str) -> list[Logger]:
    """TensorBoard and CSV loggers writing into the same ``<root_dir>/version_<n>`` folder."""
    tensorboard = TensorBoardLogger(root_dir, name="", default_hp_metric=False)
    return [tensorboard, CSVLogger(root_dir, name="", version=tensorboard.version)]


def config_files(args: Sequence[str]) -> Iterator[Path]:
    """The files given with ``--config`` in ``args`` (either ``--config F`` or ``--config=F``)."""
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            yield Path(args[index + 1])
        elif arg.startswith("--config="):
            yield Path(arg.split("=", 1)[1])


def check_config_file(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` if it (or a group file it references) is not valid YAML, or if it
    sets ``model.num_classes``, which the CLI takes from the data module."""
    if not path.is_file():
        return  # jsonargparse reports a missing file itself, with its name
    try:
        with path.open() as handle:
            config = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        return
    model = config.get("model")
    if isinstance(model, dict) and "num_classes" in model:
        raise ValueError(
            f"config file {path} sets model.num_classes, but the number of classes follows the data module "
            "(data.num_classes is linked to model.num_classes); remove the key"
        )
    for value in config.values():  # groups given as files, e.g. `data: data/cifar10.yaml`, relative to this file
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            check_config_file(path.parent / value)


def check_against_checkpoint(ckpt_path: str, given: dict[str, Any], saved: dict[str, Any]) -> None:
    """Refuse a model config whose networks differ from the checkpoint's; warn about the values it replaces.

    Args:
        ckpt_path: the checkpoint, named in the messages.
        given: the ``model`` section of the parsed config.
        saved: the checkpoint's ``hyper_parameters`` (which LightningCLI then puts in place of ``given``).
    """
    conflicts = [k for k in _STRUCTURAL_KEYS if k in saved and given.get(k) != saved[k]]
    if conflicts:
        listed = ", ".join(f"model.{k}={saved[k]!r}" for k in conflicts)
        asked = ", ".join(f"model.{k}={given.get(k)!r}" for k in conflicts)
        raise ValueError(
            f"ckpt_path {ckpt_path} holds a model with {listed}, but the config asks for {asked}; use the config "
            "(and overrides) the checkpoint was trained with"
        )
    replaced = [
        f"model.{k}: {given[k]!r} -> {v!r}"
        for k, v in saved.items()
        if k in given and k != "num_classes" and given[k] != v
    ]
    if replaced:
        rank_zero_warn(f"the hyper-parameters saved in {ckpt_path} replace the config's: " + "; ".join(replaced))


class PKKDLightningCLI(LightningCLI):
    """LightningCLI with the framework's default callbacks, loggers, argument links and early checks."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/student_acc1",
                "checkpoint.mode": "max",
                "last_checkpoint.filename": "last",
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.enable_version_counter": False,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.default_root_dir": DEFAULT_ROOT_DIR,
            }
        )
        parser.add_lightning_class_args(DivergenceGuard, "divergence_guard")
        parser.add_lightning_class_args(ExportStudent, "export")
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint on the test split (ignored by the other subcommands).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        for flag in _UNSUPPORTED_FLAGS:
            if any(arg == flag or arg.startswith(f"{flag}=") for arg in argv):
                parser.error(
                    f"{flag} is not supported: PKKDModule configures its own SGD optimiser with named parameter groups "
                    "(model.lr, model.momentum, model.nesterov, model.weight_decay) and schedule (model.lr_schedule: "
                    "cosine or constant)"
                )
        for path in config_files(argv):
            check_config_file(path)
        super().parse_arguments(parser, args)
        # Checked here, before LightningCLI reads the checkpoint's hyper-parameters with a bare torch.load: a missing,
        # corrupt or non-Lightning file then fails with its path and what to do in the message.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else self.config.get("ckpt_path")
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT_PATHS:
            checkpoint = read_checkpoint(ckpt_path)
            if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
                raise ValueError(
                    f"ckpt_path {ckpt_path} is not a Lightning checkpoint (for example <run>/checkpoints/last.ckpt); "
                    "an exported student is loaded with pkkd_lightning.callbacks.load_exported_student instead"
                )
            model = (self.config[subcommand] if subcommand else self.config)["model"]
            check_against_checkpoint(ckpt_path, model.as_dict(), checkpoint.get("hyper_parameters", {}))

    def after_fit(self) -> None:
        """Test the best checkpoint (the final weights when none was saved) if ``test_after_fit`` is set."""
        if not self._get(self.config, "test_after_fit") or self.trainer.interrupted:
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        if not best:
            rank_zero_info("test_after_fit: no best checkpoint was saved; testing the final weights")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        except BaseException:
            self._remove_empty_log_dir()
            raise

    def _remove_empty_log_dir(self) -> None:
        """After a failure, delete this run's log folder if it holds no checkpoint and no metrics (rank zero).

        Reads the logger's own directory, not ``Trainer.log_dir``, which is a collective that a failing process
        must not enter alone.
        """
        logger = self.trainer.logger
        if self.trainer.global_rank != 0 or logger is None or logger.log_dir is None:
            return
        folder = Path(logger.log_dir)
        if folder.is_dir() and not any(folder.rglob("*.ckpt")) and not (folder / "metrics.csv").exists():
            shutil.rmtree(folder)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self.config_init.get(self.subcommand, self.config_init) if self.subcommand else self.config_init
        trainer_config = config.get("trainer", {})
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = default_loggers(trainer_config.get("default_root_dir") or DEFAULT_ROOT_DIR)
        return super().instantiate_trainer(**kwargs)


def cli_main(args: list[str] | None = None, run: bool = True) -> PKKDLightningCLI:
    """Run the command line (``args=None`` reads ``sys.argv``); returns the CLI object for tests and notebooks."""
    return PKKDLightningCLI(
        PKKDModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )

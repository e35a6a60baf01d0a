"""The command line: LightningCLI over :class:`PKKDModule` and any LightningDataModule.

``python cli.py {fit,validate,test,predict} --config configs/<experiment>.yaml [--ckpt_path ...]``; every
``__init__`` argument of the module, the data module and the Trainer is a config key (``--print_config`` shows
them all). On top of Lightning's defaults every run gets: TensorBoard and CSV logs in one version folder under
``trainer.default_root_dir``, a ``ModelCheckpoint`` on ``val/student_acc1`` plus ``last.ckpt`` (config group
``checkpoint``), an export of the plain student when fitting ends (``export``), a checkpoint on SIGTERM
(``preemption``), and a CSV of predictions for ``predict`` (``prediction_writer``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from pkkd_lightning.callbacks import ExportStudent, PredictionWriter, PreemptionCheckpoint
from pkkd_lightning.module import PKKDModule
from pkkd_lightning.network_io import read_checkpoint

DEFAULT_ROOT_DIR = "runs/default"
_SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")


def default_loggers(root_dir: str) -> list[Logger]:
    """TensorBoard and CSV loggers writing into the same ``<root_dir>/version_<n>`` folder."""
    tensorboard = TensorBoardLogger(root_dir, name="", default_hp_metric=False)
    return [tensorboard, CSVLogger(root_dir, name="", version=tensorboard.version)]


class PKKDLightningCLI(LightningCLI):
    """LightningCLI with the framework's default callbacks, loggers and argument links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/student_acc1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.default_root_dir": DEFAULT_ROOT_DIR,
            }
        )
        parser.add_lightning_class_args(ExportStudent, "export")
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT_PATHS:
            read_checkpoint(ckpt_path)  # a missing or corrupt file fails here, with its path in the message

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
        args=args,
        run=run,
    )

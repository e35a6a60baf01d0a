"""The command line: LightningCLI over :class:`PKKDModule` and any LightningDataModule.

``python cli.py {fit,validate,test,predict} --config configs/<experiment>.yaml [--ckpt_path ...]``; every
``__init__`` argument of the module, the data module and the Trainer is a config key (``--print_config`` shows
them all). On top of Lightning's defaults every run gets: TensorBoard and CSV logs in one version folder under
``trainer.default_root_dir``, a ``ModelCheckpoint`` on ``val/student_acc1`` (config group ``checkpoint``), a
``last.ckpt`` rewritten at every epoch end for resuming (``last_checkpoint``; Lightning's own ``save_last`` writes
only when the monitored checkpoint improves), an export of the plain student when fitting ends (``export``), a
checkpoint on SIGTERM (``preemption``), and a CSV of predictions for ``predict`` (``prediction_writer``). With
``test_after_fit: true`` ``fit`` ends by testing the best checkpoint (student and teacher accuracy on the test
split).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

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

    def after_fit(self) -> None:
        """Test the best checkpoint (the final weights when none was saved) if ``test_after_fit`` is set."""
        if not self._get(self.config, "test_after_fit") or self.trainer.interrupted:
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        if not best:
            rank_zero_info("test_after_fit: no best checkpoint was saved; testing the final weights")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)

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

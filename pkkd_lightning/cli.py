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

One run, one folder: the version folder is created exclusively, so runs started together never share one, and
checkpoints are written atomically (:class:`~pkkd_lightning.checkpoint_io.AtomicCheckpointIO`). A ``fit`` resumes
only when asked: ``--ckpt_path FILE``, or ``--ckpt_path last`` for the newest ``last.ckpt``/``preempted.ckpt`` of
the run (its fixed checkpoint folders, else its version folders; a new run when there is none: the same command
serves a requeued job's first start and its restarts). ``--warm_start FILE`` starts a new run from a checkpoint's
weights with new settings.

Mistakes fail before anything runs, naming the file or key (:mod:`pkkd_lightning.cli_checks`,
:mod:`pkkd_lightning.config_files`): malformed YAML, a key repeated in a config file, ``model.num_classes`` in a
config (it follows the data module), ``--optimizer``/``--lr_scheduler`` (the module configures its own SGD and
schedule), a misspelt or abbreviated option, ``max_epochs 0`` or an unbounded cosine run, a fresh fit into a
fixed checkpoint folder that holds checkpoints, a checkpoint that is not a Lightning checkpoint, one whose
architecture differs from the config's, a resume that changes the run's settings, and a checkpoint evaluated on
other data than it was trained on (``--allow_other_data true`` for a deliberate transfer test).
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pkkd_lightning.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    ExportStudent,
    PredictionWriter,
    PreemptionCheckpoint,
)
from pkkd_lightning.checkpoint_io import AtomicCheckpointIO
from pkkd_lightning.cli_checks import (
    check_against_checkpoint,
    check_data_against_checkpoint,
    check_same_networks,
    check_training_length,
    fixed_checkpoint_folders,
    resolve_fit_checkpoint,
)
from pkkd_lightning.config_files import check_config_file, config_files
from pkkd_lightning.loggers import default_loggers
from pkkd_lightning.module import PKKDModule
from pkkd_lightning.network_io import load_module_weights, read_lightning_checkpoint

DEFAULT_ROOT_DIR = "runs/default"
#: Exit status of a run stopped by SIGTERM (128 + 15, the shell's convention), so job schedulers can requeue it.
PREEMPTED_EXIT_CODE = 143
_SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
_UNSUPPORTED_FLAGS = ("--optimizer", "--lr_scheduler")
#: What the CLI keeps of a checkpoint it checked, for the data check after the data module is built.
_CHECKPOINT_RECORD_KEYS = ("hyper_parameters", "datamodule_hyper_parameters", "data_classes")
#: The start of ``ModelCheckpoint``'s warning when a checkpoint's callback state is restored into another folder.
_FOLDER_CHANGED_WARNING = "The dirpath has changed from"


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
        parser.add_argument(
            "--warm_start",
            type=str | None,
            default=None,
            help="fit only: start a new run (new optimiser, schedule and settings) from the weights of this Lightning "
            "checkpoint, e.g. to retrain a diverged run with a lower model.lr; --ckpt_path instead resumes a run as "
            "it was.",
        )
        parser.add_argument(
            "--allow_other_data",
            type=bool,
            default=False,
            help="Evaluate or resume a checkpoint on other data than it was trained on (a deliberate transfer test); "
            "refused by default.",
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
        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else self.config
        ckpt_path, warm_start = section.get("ckpt_path"), section.get("warm_start")
        if subcommand == "fit":
            check_training_length(section["trainer"], section["model"]["lr_schedule"])
            if warm_start and ckpt_path:
                raise ValueError(
                    f"--warm_start {warm_start} starts a new run from a checkpoint's weights and --ckpt_path "
                    f"{ckpt_path} resumes a run; give one of them"
                )
            root = section["trainer"].get("default_root_dir") or DEFAULT_ROOT_DIR
            ckpt_path = section["ckpt_path"] = resolve_fit_checkpoint(
                ckpt_path, fixed_checkpoint_folders(section), root
            )
        # Checked here, before LightningCLI reads the checkpoint's hyper-parameters with a bare torch.load: a missing,
        # corrupt or non-Lightning file then fails with its path and what to do in the message.
        self._checkpoint_record: tuple[str, dict[str, Any]] | None = None
        model = section["model"].as_dict()
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT_PATHS:
            checkpoint = read_lightning_checkpoint(ckpt_path, "ckpt_path")
            check_against_checkpoint(ckpt_path, model, checkpoint.get("hyper_parameters", {}), subcommand == "fit")
            self._checkpoint_record = (ckpt_path, {k: checkpoint.get(k) for k in _CHECKPOINT_RECORD_KEYS})
        if warm_start and subcommand == "fit":
            checkpoint = read_lightning_checkpoint(warm_start, "warm_start")
            check_same_networks(warm_start, model, checkpoint.get("hyper_parameters", {}))

    def _check_data(self, stage: str) -> None:
        """Refuse a checkpoint trained on other data than the config's (unless ``allow_other_data``)."""
        if self._checkpoint_record is None or self._get(self.config, "allow_other_data"):
            return
        ckpt_path, record = self._checkpoint_record
        data = self._get(self.config, "data")
        class_names = None
        if record.get("data_classes") and hasattr(self.datamodule, "classes"):
            self.datamodule.setup(stage)  # the splits a stage needs are built once; the trainer reuses them
            class_names = list(self.datamodule.classes) or None
        check_data_against_checkpoint(
            ckpt_path, record, data["class_path"], data.get("init_args") or {}, self.datamodule.num_classes, class_names
        )

    def before_fit(self) -> None:
        self._check_data("fit")
        if warm_start := self._get(self.config, "warm_start"):
            load_module_weights(self.model, warm_start)
            rank_zero_info(f"warm_start: a new run from the weights of {warm_start} (no optimiser state or schedule)")

    def before_validate(self) -> None:
        self._check_data("validate")

    def before_test(self) -> None:
        self._check_data("test")

    def before_predict(self) -> None:
        self._check_data("predict")

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
            with warnings.catch_warnings():
                if subcommand != "fit":
                    # validate/test/predict restore the last-checkpoint callback's state into this run's new log
                    # folder, and Lightning warns that its old paths are not reloaded: only a fit would use them.
                    warnings.filterwarnings("ignore", message=_FOLDER_CHANGED_WARNING)
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
        if not trainer_config.get("plugins") and "plugins" not in kwargs:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def cli_main(args: list[str] | None = None, run: bool = True) -> PKKDLightningCLI:
    """Run the command line (``args=None`` reads ``sys.argv``); returns the CLI object for tests and notebooks."""
    return PKKDLightningCLI(
        PKKDModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        # A misspelt option (--trainer.max_epoch) is an error, not a prefix of another one.
        parser_kwargs={
            "allow_abbrev": False,
            **{name: {"allow_abbrev": False} for name in ("fit", "validate", "test", "predict")},
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )

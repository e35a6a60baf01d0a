"""The run's loggers: TensorBoard and CSV in one exclusively claimed ``<root>/version_<n>`` folder."""

from __future__ import annotations

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from pkkd_lightning.run_dirs import claim_version


class _SharedFolderWriter(ExperimentWriter):
    """Lightning's CSV writer, which warns that "previous log files will be deleted" whenever its folder is not
    empty; in a folder shared with TensorBoard that is always, and untrue: only an old ``metrics.csv`` is replaced.
    This one warns (and replaces) only then."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()


class SharedFolderCSVLogger(CSVLogger):
    """``CSVLogger`` that writes beside other loggers in the same version folder without a false warning."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _SharedFolderWriter(log_dir=self.log_dir)
        return self._experiment


def default_loggers(root_dir: str) -> list[Logger]:
    """TensorBoard and CSV loggers writing into the same ``<root_dir>/version_<n>`` folder.

    Rank zero claims the folder exclusively (:func:`~pkkd_lightning.run_dirs.claim_version`), so concurrent runs
    never share one; the other ranks of a multi-process run write no logs, and every folder they need
    (checkpoints, exports) is broadcast from rank zero by Lightning.
    """
    version = claim_version(root_dir) if rank_zero_only.rank == 0 else None
    tensorboard = TensorBoardLogger(root_dir, name="", version=version, default_hp_metric=False)
    return [tensorboard, SharedFolderCSVLogger(root_dir, name="", version=version)]

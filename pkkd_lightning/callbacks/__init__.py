"""Callbacks: loss-weight schedules, precise BatchNorm, checkpoints, divergence guard, export, predictions."""

from pkkd_lightning.callbacks.best_checkpoint import BestCheckpoint
from pkkd_lightning.callbacks.divergence_guard import DivergenceError, DivergenceGuard
from pkkd_lightning.callbacks.export_student import ExportStudent, export_student, load_exported_student
from pkkd_lightning.callbacks.loss_weight_schedule import LossWeightSchedule, schedule_value
from pkkd_lightning.callbacks.precise_bn import PreciseBatchNorm, reestimate_batchnorm
from pkkd_lightning.callbacks.prediction_writer import PredictionWriter
from pkkd_lightning.callbacks.preemption import PreemptionCheckpoint

__all__ = [
    "BestCheckpoint",
    "DivergenceError",
    "DivergenceGuard",
    "ExportStudent",
    "LossWeightSchedule",
    "PreciseBatchNorm",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "export_student",
    "load_exported_student",
    "reestimate_batchnorm",
    "schedule_value",
]

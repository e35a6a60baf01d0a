"""Callbacks: progressive loss schedules, precise BatchNorm, student export, preemption checkpoints."""

from pkkd_lightning.callbacks.export_student import ExportStudent, export_student, load_exported_student
from pkkd_lightning.callbacks.precise_bn import PreciseBatchNorm, reestimate_batchnorm
from pkkd_lightning.callbacks.prediction_writer import PredictionWriter
from pkkd_lightning.callbacks.preemption import PreemptionCheckpoint
from pkkd_lightning.callbacks.progressive_schedule import ProgressiveSchedule, schedule_value

__all__ = [
    "ExportStudent",
    "PreciseBatchNorm",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ProgressiveSchedule",
    "export_student",
    "load_exported_student",
    "reestimate_batchnorm",
    "schedule_value",
]

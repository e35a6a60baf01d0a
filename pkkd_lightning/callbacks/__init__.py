"""Callbacks: progressive loss schedules, student export, preemption checkpoints."""

from pkkd_lightning.callbacks.export_student import ExportStudent, export_student, load_exported_student
from pkkd_lightning.callbacks.prediction_writer import PredictionWriter
from pkkd_lightning.callbacks.preemption import PreemptionCheckpoint
from pkkd_lightning.callbacks.progressive_schedule import ProgressiveSchedule, schedule_value

__all__ = [
    "ExportStudent",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ProgressiveSchedule",
    "export_student",
    "load_exported_student",
    "schedule_value",
]

"""Classification metrics logged for every network and stage."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 (``acc1``) and, from 5 classes on, top-5 (``acc5``) accuracy over the whole epoch."""
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)

"""Shared pieces of the training integration tests: a small, fast digits set-up."""

from __future__ import annotations

import lightning as L

from pkkd_lightning.data import DigitsDataModule


def tiny_digits(**overrides) -> DigitsDataModule:
    """100-200 8x8 digits: a few optimisation steps per epoch on two cores."""
    kwargs = {"image_size": 8, "train_per_class": 20, "test_per_class": 10, "batch_size": 32}
    kwargs.update(overrides)
    return DigitsDataModule(**kwargs)


def quiet_trainer(**overrides) -> L.Trainer:
    kwargs = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    kwargs.update(overrides)
    return L.Trainer(**kwargs)

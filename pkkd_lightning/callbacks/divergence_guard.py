"""DivergenceGuard: stop a diverging run before a ruined state is checkpointed, and say which checkpoint is good.

A run can diverge with NaNs or with finite numbers: losses of 1e18 push weights to 1e33, whose squares overflow
in BatchNorm's running variance. Lightning would still write ``last.ckpt`` and, the validation accuracy being a
number, choose that state as best. This callback therefore

* stops training when the training loss leaves ``[-max_loss, max_loss]`` or a loss term is not finite (naming
  the terms ``PKKDModule.training_step`` reports in its output's ``non_finite_terms``), and
* checks that every parameter and buffer of the module is finite and within ``[-max_state, max_state]`` right
  before the checkpoint callbacks run at the end of a training epoch and of a validation (Lightning runs
  ``ModelCheckpoint`` hooks after all other callbacks), so a ruined state is never saved, and never chosen as best.
  The bound catches runs that diverge in finite numbers: a too large adaptive learning rate (``model.eta 1e9``)
  drives BatchNorm's running variances to 1e22 while the loss stays finite, and a checkpoint of that state is
  at chance and cannot be trained back.

Either way the error names the newest checkpoint the run had written before, which holds a good state. Under DDP
the decision is collective (the loss check is a sum over processes), so every process stops at the same step
instead of one of them raising while the others wait in the next all-reduce.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pkkd_lightning.validation import check_number


class DivergenceError(FloatingPointError):
    """Training diverged; the message names what and where, and the last good checkpoint."""


def last_good_checkpoint(trainer: L.Trainer) -> str:
    """A sentence naming the newest checkpoint file the run's ``ModelCheckpoint`` callbacks wrote."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            paths += [callback.best_model_path, callback.last_model_path, *callback.best_k_models]
    existing = [Path(p) for p in paths if p and Path(p).is_file()]
    if not existing:
        return "No checkpoint was written before this point."
    newest = max(existing, key=lambda p: p.stat().st_mtime)
    return (
        f"The last good checkpoint is {newest}. A resume continues the same run with the same settings; to train on "
        f"from its weights with a lower model.lr or model.eta, start a new run with --warm_start {newest}."
    )


def first_out_of_range(module: torch.nn.Module, bound: float = math.inf) -> str | None:
    """``name (largest magnitude)`` of the first parameter or buffer with a NaN or infinite entry, or one beyond
    ``[-bound, bound]``; None when the whole state is sane."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        largest = float(tensor.detach().abs().max())
        if not largest <= bound:  # also true for NaN
            return f"{name} (largest magnitude {largest:.4g})"
    return None


class DivergenceGuard(L.Callback):
    """Raise :class:`DivergenceError` on a diverging loss or a non-finite state, before it is checkpointed.

    Args:
        max_loss: the largest training loss magnitude that counts as sane (a cross-entropy starts near
            ``log(num_classes)``; PKKD's total stays in the tens).
        max_state: the largest magnitude of any parameter or buffer that counts as sane. Healthy runs stay far
            below the default 1e12 (BatchNorm running variances of adder layers are in the thousands to millions);
            float32 squares overflow near 1e19.
    """

    def __init__(self, max_loss: float = 1e6, max_state: float = 1e12) -> None:
        check_number("divergence_guard.max_loss", max_loss, low=0.0, low_open=True)
        check_number("divergence_guard.max_state", max_state, low=0.0, low_open=True)
        self.max_loss, self.max_state = max_loss, max_state

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        terms = outputs.get("non_finite_terms", []) if isinstance(outputs, dict) else []
        local = loss.detach().abs().float() + (math.inf if terms else 0.0)
        value = float(trainer.strategy.reduce(local, reduce_op="sum"))  # every process takes part
        if math.isfinite(value) and value <= self.max_loss * trainer.world_size:
            return
        what = f"loss term(s) {', '.join(map(repr, terms))} are not finite" if terms else "the training loss diverged"
        raise DivergenceError(
            f"{what} at global step {trainer.global_step} (epoch {trainer.current_epoch}): |loss| summed over "
            f"processes is {value:.4g}, beyond divergence_guard.max_loss={self.max_loss:g} per process. "
            + last_good_checkpoint(trainer)
        )

    def _check_state(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        name = first_out_of_range(pl_module, self.max_state)
        # Collective: BatchNorm statistics are per process, and one process raising alone would leave the others
        # waiting in the next all-reduce.
        if (
            float(
                trainer.strategy.reduce(torch.tensor(float(name is not None), device=pl_module.device), reduce_op="sum")
            )
            == 0
        ):
            return
        raise DivergenceError(
            f"{name or 'a tensor on another process'} is not finite or beyond divergence_guard.max_state="
            f"{self.max_state:g} at {when} (global step {trainer.global_step}, epoch {trainer.current_epoch}): the "
            "run has diverged; nothing was saved from this state. " + last_good_checkpoint(trainer)
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_state(trainer, pl_module, "the end of a training epoch")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_state(trainer, pl_module, "the end of a validation")

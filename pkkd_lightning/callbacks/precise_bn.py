"""PreciseBatchNorm: re-estimate BatchNorm statistics with the current weights before each validation.

BatchNorm's running statistics are an exponential average over past training steps (momentum 0.1). After an
adder layer the activations are negative L1 distances, hundreds in magnitude, that move quickly while the
filters train; the average then describes networks of several steps ago and eval-mode accuracy collapses (the
ANN students of short runs sit at chance for their first epochs although their training loss falls). "Precise
BN" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021) replaces the running statistics by the plain
average over a few training batches passed through the network as it is now. Training itself is unchanged:
training-mode BatchNorm normalises with batch statistics and never reads the running ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from pkkd_lightning.data.sampler import SeededBlockSampler

Reduce = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def reestimate_batchnorm(
    networks: list[nn.Module], batches: Iterable[torch.Tensor], mean_over_processes: Reduce | None = None
) -> int:
    """Set the running mean and variance of every BatchNorm layer in ``networks`` that is in training mode to

        mu = (1/B) sum_b mean_b,    var = (1/B) sum_b (var_b + mean_b^2) - mu^2,

    the moments of all ``B`` batches together (``mean_b``, ``var_b``: the layer's per-channel batch moments).
    ``mean_over_processes`` averages a tensor over data-parallel processes (each saw its own batches); the
    result is then the moments over every process's batches. Layers in eval mode (a frozen teacher) are left
    alone; parameters, ``num_batches_tracked`` and each layer's ``momentum`` are unchanged.

    Returns:
        the number of batches used.
    """
    modules = [m for net in networks for m in net.modules()]
    layers = [m for m in modules if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    sums = {layer: [torch.zeros_like(layer.running_mean), torch.zeros_like(layer.running_var)] for layer in layers}

    def record(layer: _BatchNorm, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0].transpose(0, 1).flatten(1).float()  # (C, everything else)
        mean, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
        sums[layer][0] += mean
        sums[layer][1] += var + mean.square()

    handles = [layer.register_forward_hook(record) for layer in layers]
    tracked = [layer.num_batches_tracked.clone() for layer in layers]
    count = 0
    try:
        for x in batches:
            for net in networks:
                net(x)
            count += 1
    finally:
        for handle in handles:
            handle.remove()
        for layer, steps in zip(layers, tracked):
            layer.num_batches_tracked.copy_(steps)
    if count == 0 or not layers:
        return count
    for layer, (mean_sum, square_sum) in sums.items():
        mean, square = mean_sum / count, square_sum / count
        if mean_over_processes is not None:
            mean, square = mean_over_processes(mean), mean_over_processes(square)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_((square - mean.square()).clamp_min(0))
    return count


def separate_loader(loader: DataLoader) -> DataLoader:
    """A loader with ``loader``'s data, sampler, batching and workers that shares no iterator with it.

    Iterating a ``persistent_workers`` loader a second time resets its live iterator, which would cut short the
    training epoch that a mid-epoch validation interrupts. A :class:`SeededBlockSampler` is replaced by its copy
    that starts at the epoch's first batch, so a resumed epoch draws the batches of an uninterrupted one.
    """
    sampler = loader.sampler
    if isinstance(sampler, SeededBlockSampler):
        sampler = sampler.from_epoch_start()
    common = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
    }
    if loader.batch_size is None:
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **common
    )


class PreciseBatchNorm(L.Callback):
    """Before each validation while fitting, re-estimate the trained networks' BatchNorm statistics from
    ``num_batches`` training batches (:func:`reestimate_batchnorm`), so that eval-mode metrics, checkpoints and
    exports describe the network as it is, not an average of its recent past.

    The networks are ``pl_module.networks()`` (``PKKDModule``: student and teacher) or the module itself. The
    extra batches are drawn under a forked random-number state, so the run's shuffles and augmentations, and an
    exact resume, are the same as without this callback. Under DDP the moments are averaged over processes.

    Args:
        num_batches: training batches per re-estimation (each costs a forward pass of every network).
    """

    def __init__(self, num_batches: int = 20) -> None:
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"PreciseBatchNorm num_batches must be a positive integer, got {num_batches!r}")
        self.num_batches = num_batches

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        names = pl_module.networks() if hasattr(pl_module, "networks") else None
        networks = [getattr(pl_module, name) for name in names] if names else [pl_module]
        was_training = pl_module.training
        pl_module.train()  # BatchNorm layers of frozen networks stay in eval mode (PKKDModule.train)
        devices = [torch.cuda.current_device()] if pl_module.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), trainer.precision_plugin.forward_context():
                reestimate_batchnorm(
                    networks,
                    self._inputs(trainer),
                    lambda t: trainer.strategy.reduce(t, reduce_op="mean"),
                )
        finally:
            pl_module.train(was_training)

    def _inputs(self, trainer: L.Trainer) -> Iterable[torch.Tensor]:
        loader = trainer.train_dataloader
        if isinstance(loader, DataLoader):
            loader = separate_loader(loader)
        for index, batch in enumerate(loader):
            if index == self.num_batches:
                return
            batch = trainer.strategy.batch_to_device(batch)
            yield batch if isinstance(batch, torch.Tensor) else batch[0]

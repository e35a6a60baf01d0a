"""The training stream: a seeded, block-sharded sampler and a DataLoader that saves and restores its position.

Every epoch ``e`` draws a permutation of the training split from a generator seeded with ``(seed, e)`` and cuts
it into global batches of ``B = batch_size * num_replicas`` items, dropping the tail that does not fill a whole
optimisation step (``accumulate_grad_batches`` global batches). Rank ``r`` trains on the contiguous block
``[r * batch_size, (r + 1) * batch_size)`` of every global batch, so ``k`` processes with batch ``b`` see, step
by step, the samples that one process sees in ``k`` consecutive micro-batches of size ``b`` with
``accumulate_grad_batches=k`` (BatchNorm statistics included: each micro-batch is one rank's batch), and both
make the same number of steps per epoch. Each sample also carries a seed drawn from ``(seed, e, index)``, with
which :class:`~pkkd_lightning.data.common.TransformSubset` augments it; the rank plays no part.

The sampler subclasses ``DistributedSampler`` so that Lightning neither replaces it under DDP nor forgets to
call ``set_epoch``; it takes its rank and world size as arguments and runs no collective.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from pkkd_lightning.data.seeding import mix_seeds
from pkkd_lightning.validation import check_int

_SEED_HIGH = 2**63 - 1


class SeededBlockSampler(DistributedSampler):
    """Yields ``(index, sample_seed)`` pairs: this rank's share of every global batch of the epoch, in order.

    A pass starts at global batch :attr:`first_batch`, 0 unless a saved position was restored with
    :meth:`restore_position` (a resumed epoch skips the batches trained on before the interruption); it is back
    to 0 when ``set_epoch`` moves to another epoch. Passes have no side effects, so other loaders may share the
    sampler without moving the training position, which :class:`ResumableLoader` keeps (``PreciseBatchNorm``
    draws its batches through :meth:`from_epoch_start`).

    Args:
        dataset: The training split (only its length is used).
        batch_size: Batch size of one rank.
        num_replicas: Number of processes sharing each global batch (the world size).
        rank: This process's rank, in ``[0, num_replicas)``.
        seed: The run's seed (see :func:`~pkkd_lightning.data.seeding.run_seed`).
        accumulate_grad_batches: Batches per optimisation step; an epoch holds a multiple of it.
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        accumulate_grad_batches: int = 1,
    ) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("accumulate_grad_batches", accumulate_grad_batches, 1)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.global_batch_size = batch_size * num_replicas
        steps = len(dataset) // (self.global_batch_size * accumulate_grad_batches)
        self.num_batches = steps * accumulate_grad_batches
        self.num_samples = self.num_batches * batch_size
        self.total_size = self.num_batches * self.global_batch_size
        self.first_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next passes; another epoch than the current one starts at its first batch."""
        if epoch != self.epoch:
            self.first_batch = 0
        super().set_epoch(epoch)

    def from_epoch_start(self) -> SeededBlockSampler:
        """A copy whose passes cover the current epoch from its first batch, also while this sampler resumes
        one mid-epoch (``PreciseBatchNorm`` draws the same batches in an interrupted and a resumed run)."""
        restarted = copy.copy(self)
        restarted.first_batch = 0
        return restarted

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, list[int]]:
        """The permutation of the whole split for ``epoch`` and the seed of every sample (by index)."""
        generator = torch.Generator().manual_seed(mix_seeds(self.seed, epoch))
        permutation = torch.randperm(len(self.dataset), generator=generator)
        sample_seeds = torch.randint(_SEED_HIGH, (len(self.dataset),), generator=generator).tolist()
        return permutation, sample_seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        permutation, sample_seeds = self.epoch_order(self.epoch)
        blocks = permutation[: self.total_size].view(self.num_batches, self.num_replicas, self.batch_size)
        mine = blocks[self.first_batch :, self.rank].reshape(-1).tolist()
        return iter([(index, sample_seeds[index]) for index in mine])

    def __len__(self) -> int:
        """Items of a whole epoch for this rank, also while a resumed pass skips its first batches (Lightning
        counts the batches trained before the interruption towards the epoch's length)."""
        return self.num_samples

    def position_state(self, epoch: int, batches: int) -> dict[str, int]:
        """A position as saved in checkpoints: ``epoch``, the ``samples`` of it trained on by all ranks
        (``batches`` global batches), and the ``seed`` and ``dataset_size`` it is valid for."""
        return {
            "epoch": epoch,
            "samples": batches * self.global_batch_size,
            "seed": self.seed,
            "dataset_size": len(self.dataset),
        }

    def restore_position(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`position_state`, with its seed: the passes over its epoch start at the first
        batch not trained on; after a finished epoch they are passes over the following epoch.

        Raises:
            ValueError: When the split's size differs from the saved one, or the saved position is not a whole
                number of this sampler's global batches (the batch size or world size changed).
        """
        if state["dataset_size"] != len(self.dataset):
            raise ValueError(
                f"the saved training position is for a training split of {state['dataset_size']} items, "
                f"but this one has {len(self.dataset)}: resume with the data settings of the interrupted run"
            )
        samples = state["samples"]
        if samples % self.global_batch_size:
            raise ValueError(
                f"the saved training position ({samples} samples into epoch {state['epoch']}) is not a whole "
                f"number of global batches of {self.batch_size} x {self.num_replicas} processes: resume with the "
                "batch size and world size of the interrupted run"
            )
        epoch, batches = state["epoch"], samples // self.global_batch_size
        if batches >= self.num_batches:
            epoch, batches = epoch + 1, 0
        self.seed = state["seed"]
        # The epoch is set now, not left to Lightning's set_epoch: a loader with workers draws its first indices
        # when its iterator is created, which Lightning does on resume before it calls set_epoch.
        self.epoch, self.first_batch = epoch, batches


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`SeededBlockSampler` that is stateful in Lightning's sense.

    It keeps the training position, the epoch and the number of its batches that it handed out (the batches
    trained on: counted on delivery, so worker prefetching does not shift it), and saves and restores it with
    ``state_dict``/``load_state_dict``, which Lightning's fit loop stores in checkpoints as the loader's state.
    Arguments are ``DataLoader``'s. With another sampler (Lightning rebuilds the loader with a
    ``SequentialSampler`` for ``Trainer(overfit_batches=...)``) it is a plain DataLoader with an empty state.
    """

    _handed_out: tuple[int, int] | None = None  # (epoch, batches) after the last batch handed out

    @property
    def _seeded(self) -> SeededBlockSampler | None:
        return self.sampler if isinstance(self.sampler, SeededBlockSampler) else None

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        return batches if self._seeded is None else _CountingIterator(batches, self)

    def state_dict(self) -> dict[str, int]:
        """The training position (see :meth:`SeededBlockSampler.position_state`)."""
        sampler = self._seeded
        if sampler is None:
            return {}
        epoch, batches = self._handed_out or (sampler.epoch, sampler.first_batch)
        return sampler.position_state(epoch, batches)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from a saved training position (see :meth:`SeededBlockSampler.restore_position`)."""
        if state_dict and self._seeded is not None:
            self._seeded.restore_position(state_dict)
            self._handed_out = None


class _CountingIterator(Iterator):
    """Wraps a :class:`ResumableLoader`'s iterator and records on the loader where its last batch was.

    The pass's epoch and first batch are read from the sampler at the first batch, when a single-process
    loader has just drawn its indices (it draws them lazily, after Lightning's ``set_epoch``).
    """

    def __init__(self, batches: Iterator[Any], loader: ResumableLoader) -> None:
        self._batches, self._loader = batches, loader
        self._start: tuple[int, int] | None = None
        self._count = 0

    def __next__(self) -> Any:
        batch = next(self._batches)
        if self._start is None:
            sampler = self._loader.sampler
            self._start = (sampler.epoch, sampler.first_batch)
        self._count += 1
        self._loader._handed_out = (self._start[0], self._start[1] + self._count)
        return batch

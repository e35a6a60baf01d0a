"""The training stream: seeded order, blocked sharding across ranks, and the loader's saved position."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.types import _Stateful
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pkkd_lightning.data.common import TransformSubset
from pkkd_lightning.data.sampler import ResumableLoader, SeededBlockSampler


def _items(n: int = 45) -> TransformSubset:
    """Item i is ``(i, i)``; accepts the sampler's ``(index, seed)`` pairs."""
    return TransformSubset(TensorDataset(torch.arange(n), torch.arange(n)), range(n), None)


def _batches(sampler: SeededBlockSampler) -> list[list[tuple[int, int]]]:
    pairs = list(sampler)
    b = sampler.batch_size
    return [pairs[i : i + b] for i in range(0, len(pairs), b)]


def _epoch(seed: int, epoch: int, **kwargs) -> list[tuple[int, int]]:
    sampler = SeededBlockSampler(_items(), 4, seed=seed, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_order_and_sample_seeds_are_a_function_of_seed_and_epoch():
    torch.manual_seed(0)
    first = _epoch(3, 1)
    torch.manual_seed(1)  # the global generator plays no part
    assert _epoch(3, 1) == first
    assert [i for i, _ in _epoch(3, 2)] != [i for i, _ in first]
    assert [i for i, _ in _epoch(4, 1)] != [i for i, _ in first]
    # A sample's seed depends on (seed, epoch, index), not on where the sample lands in the epoch.
    seeds = dict(first)
    assert all(seeds[i] == s for i, s in _epoch(3, 1, num_replicas=3, rank=2))
    assert len({s for _, s in first}) == len(first)


def test_two_ranks_see_the_single_process_micro_batches_of_each_step():
    single = _batches(SeededBlockSampler(_items(), 4, seed=5, accumulate_grad_batches=2))
    ranks = [_batches(SeededBlockSampler(_items(), 4, num_replicas=2, rank=r, seed=5)) for r in (0, 1)]
    assert len(single) == 10 and [len(r) for r in ranks] == [5, 5]  # 45 items: 5 steps of 2 x 4
    for step in range(5):
        assert ranks[0][step] == single[2 * step] and ranks[1][step] == single[2 * step + 1]
    seen = [i for rank in ranks for batch in rank for i, _ in batch]
    assert len(set(seen)) == len(seen) == 40


@pytest.mark.parametrize(
    ("num_replicas", "accumulate", "batches"),
    [(1, 1, 11), (1, 2, 10), (2, 1, 5), (3, 1, 3), (2, 3, 3)],
)
def test_an_epoch_drops_the_tail_that_does_not_fill_an_optimisation_step(num_replicas, accumulate, batches):
    sampler = SeededBlockSampler(_items(), 4, num_replicas=num_replicas, accumulate_grad_batches=accumulate)
    assert sampler.num_batches == batches and len(sampler) == len(list(sampler)) == 4 * batches
    assert isinstance(sampler, DistributedSampler)  # so Lightning keeps it under DDP and calls set_epoch


def test_a_restored_position_skips_the_batches_trained_on_in_its_epoch():
    sampler = SeededBlockSampler(_items(), 4, num_replicas=2, rank=1, seed=2)
    sampler.set_epoch(1)
    whole = _batches(sampler)
    sampler = SeededBlockSampler(_items(), 4, num_replicas=2, rank=1, seed=9)  # seed and epoch come from the state
    sampler.restore_position({"epoch": 1, "samples": 3 * 8, "seed": 2, "dataset_size": 45})
    # No set_epoch: a loader with workers draws indices when Lightning creates its iterator, before set_epoch.
    assert _batches(sampler) == whole[3:] and len(sampler) == 20  # the epoch's length stays whole
    sampler.set_epoch(1)
    assert _batches(sampler) == whole[3:]  # passes have no side effects
    sampler.set_epoch(2)
    assert len(_batches(sampler)) == 5  # another epoch starts at its first batch
    sampler.restore_position({"epoch": 1, "samples": 5 * 8, "seed": 2, "dataset_size": 45})  # epoch finished
    assert (sampler.epoch, sampler.first_batch) == (2, 0)


def test_from_epoch_start_covers_a_resumed_epoch_from_its_first_batch():
    sampler = SeededBlockSampler(_items(), 4, num_replicas=2, rank=1, seed=2)
    sampler.set_epoch(1)
    whole = _batches(sampler)
    sampler.restore_position({"epoch": 1, "samples": 3 * 8, "seed": 2, "dataset_size": 45})
    assert _batches(sampler.from_epoch_start()) == whole
    assert _batches(sampler) == whole[3:]  # the training position is untouched


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"epoch": 0, "samples": 8, "seed": 0, "dataset_size": 46}, "46 items"),
        ({"epoch": 0, "samples": 6, "seed": 0, "dataset_size": 45}, "batch size and world size"),
    ],
)
def test_a_position_from_other_data_settings_is_refused(state, match):
    with pytest.raises(ValueError, match=match):
        SeededBlockSampler(_items(), 4).restore_position(state)


def _loader(num_workers: int = 0) -> ResumableLoader:
    sampler = SeededBlockSampler(_items(), 4, seed=1)
    return ResumableLoader(_items(), batch_size=4, sampler=sampler, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_state_counts_the_batches_handed_out_and_round_trips(num_workers):
    first = _loader(num_workers)
    assert isinstance(first, _Stateful)  # Lightning saves its state in checkpoints
    first.sampler.set_epoch(2)
    iterator = iter(first)
    for _ in range(3):  # workers have requested more batches than this
        next(iterator)
    state = first.state_dict()
    assert state == {"epoch": 2, "samples": 12, "seed": 1, "dataset_size": 45}
    rest = list(iterator)
    resumed = _loader(num_workers)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # restored, not yet trained on
    assert len(resumed) == 11
    assert [b[0].tolist() for b in resumed] == [b[0].tolist() for b in rest]
    assert resumed.state_dict() == first.state_dict() == {**state, "samples": 44}


def test_another_loader_sharing_the_sampler_does_not_move_the_training_position():
    training = _loader()
    iterator = iter(training)
    next(iterator)
    next(iterator)
    borrowed = DataLoader(training.dataset, batch_size=4, sampler=training.sampler)  # as PreciseBatchNorm does
    assert len(list(borrowed)) == 11
    assert training.state_dict()["samples"] == 8
    assert len(list(iterator)) == 9 and training.state_dict()["samples"] == 44


def test_the_loader_over_another_sampler_is_a_plain_loader_without_state():
    loader = ResumableLoader(_items(), batch_size=4)  # as Lightning rebuilds it for overfit_batches
    assert len(list(loader)) == 12 and loader.state_dict() == {}
    loader.load_state_dict({})

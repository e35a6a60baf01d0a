"""Per-sample seeded augmentation: a function of the sample's seed alone, leaving the global generators alone."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pkkd_lightning.data import DigitsDataModule
from pkkd_lightning.data.common import TransformSubset
from pkkd_lightning.data.seeding import mix_seeds, run_seed, seeded_rngs


def _draws_from_every_generator(x: torch.Tensor) -> torch.Tensor:
    """An 'augmentation' drawing from torch's, Python's and NumPy's global generators (torchvision, timm)."""
    return x + torch.rand(()) + random.random() + float(np.random.rand())


def _global_states() -> tuple:
    _, keys, *rest = np.random.get_state()
    return torch.get_rng_state(), random.getstate(), keys.copy(), rest


def _same_states(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2]) and a[3] == b[3]


def test_a_seeded_item_is_the_same_whatever_the_global_state_and_leaves_it_unchanged():
    data = TransformSubset(TensorDataset(torch.zeros(3), torch.arange(3)), [0, 1, 2], _draws_from_every_generator)
    items = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        np.random.seed(global_seed)
        before = _global_states()
        items.append(data[(2, 1234)])
        assert _same_states(before, _global_states())
    assert torch.equal(items[0][0], items[1][0]) and items[0][1] == 2
    assert not torch.equal(data[(2, 1235)][0], items[0][0])
    assert not torch.equal(data[2][0], data[2][0])  # a plain index draws from the global generators, as before


def test_seeded_rngs_restores_the_states_also_on_error():
    before = _global_states()
    with pytest.raises(RuntimeError), seeded_rngs(7):
        torch.rand(3)
        raise RuntimeError
    assert _same_states(before, _global_states())


def test_run_seed_is_the_global_seed_or_the_fallback(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "17")
    assert run_seed(3) == 17
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert run_seed(3) == 3
    assert mix_seeds(1, 2) != mix_seeds(2, 1) and mix_seeds(0, 1) != mix_seeds(1, 0)


def _digits_batches(seed: str, monkeypatch, rank: int = 0, world: int = 1, accumulate: int = 1) -> list:
    monkeypatch.setenv("PL_GLOBAL_SEED", seed)
    dm = DigitsDataModule(image_size=8, train_per_class=5, batch_size=4)
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, accumulate_grad_batches=accumulate)
    dm.setup("fit")
    return list(dm.train_dataloader())


def test_digits_batches_follow_the_run_seed_not_the_global_generator(monkeypatch):
    torch.manual_seed(0)
    first = _digits_batches("0", monkeypatch)
    torch.manual_seed(1)
    again = _digits_batches("0", monkeypatch)
    other = _digits_batches("1", monkeypatch)
    assert len(first) == 12 and all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])


def test_two_ranks_get_the_augmented_micro_batches_of_one_process_with_accumulation(monkeypatch):
    single = _digits_batches("4", monkeypatch, accumulate=2)
    ranks = [_digits_batches("4", monkeypatch, rank=r, world=2) for r in (0, 1)]
    assert len(single) == 12 and [len(r) for r in ranks] == [6, 6]
    for step in range(6):
        for rank in (0, 1):
            x, y = ranks[rank][step]
            assert torch.equal(x, single[2 * step + rank][0]) and torch.equal(y, single[2 * step + rank][1])

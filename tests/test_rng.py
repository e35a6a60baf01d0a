"""Random-number generator states survive a checkpoint (weights_only-safe) and restore every stream."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from pkkd_lightning.rng import collect_rng_states, restore_rng_states, resume_rng_states


def draws() -> tuple[float, float, float]:
    return torch.rand(()).item(), float(np.random.rand()), random.random()


def test_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    buffer = io.BytesIO()
    torch.save({"rng_states": collect_rng_states()}, buffer)
    expected = draws()
    draws()  # move every stream on
    buffer.seek(0)
    restore_rng_states(torch.load(buffer, weights_only=True)["rng_states"])
    assert draws() == expected


def test_resume_restores_the_states_and_draws_nothing():
    torch.manual_seed(5)
    states = collect_rng_states()
    expected = torch.rand(()).item()
    torch.manual_seed(99)
    resume_rng_states(states)
    assert torch.rand(()).item() == expected

"""Precise BatchNorm: re-estimated statistics are the moments of all batches, and training is untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from pkkd_lightning import PKKDModule
from pkkd_lightning.callbacks import PreciseBatchNorm, reestimate_batchnorm
from pkkd_lightning.callbacks.precise_bn import separate_loader
from pkkd_lightning.data.sampler import ResumableLoader, SeededBlockSampler
from tests.integration.helpers import quiet_trainer, tiny_digits


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5), nn.Flatten()
    )


def batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 5, 5, generator=gen) * scale + shift for scale, shift in ((1, 0), (2, 3), (0.5, -1))]


def pooled_moments(net: nn.Sequential, inputs: list[torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer: float64 mean and population variance of its inputs over all ``inputs`` together."""
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, idx=idx: seen.setdefault(idx, []).append(i[0].double()))
        for idx, layer in enumerate(net)
        if isinstance(layer, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        for x in inputs:
            net(x)
    for hook in hooks:
        hook.remove()
    moments = {}
    for idx, chunks in seen.items():
        values = torch.cat([c.transpose(0, 1).flatten(1) for c in chunks], dim=1)
        moments[idx] = (values.mean(dim=1), values.var(dim=1, unbiased=False))
    return moments


def test_statistics_are_the_moments_of_all_batches_and_nothing_else_changes():
    net = small_net().train()
    expected = pooled_moments(copy.deepcopy(net), batches())
    params = copy.deepcopy(net.state_dict())
    assert reestimate_batchnorm([net], batches()) == 3
    for idx, (mean, var) in expected.items():
        torch.testing.assert_close(net[idx].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net[idx].running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert net[idx].momentum == 0.1
    for key, value in net.state_dict().items():
        if "running" not in key:
            torch.testing.assert_close(value, params[key], rtol=0, atol=0, msg=key)


def test_two_processes_pool_their_batches():
    """Averaging each process's moments over processes gives the moments of both processes' batches."""
    b = batches()[:2]
    reference = small_net().train()
    reestimate_batchnorm([reference], b)
    sent: list[torch.Tensor] = []
    reestimate_batchnorm([small_net().train()], b[1:], lambda t: sent.append(t.clone()) or t)  # "process 1"
    pooled = small_net().train()
    reestimate_batchnorm([pooled], b[:1], lambda t: (t + sent.pop(0)) / 2)  # "process 0", all-reduce by hand
    for got, want in zip(pooled.modules(), reference.modules()):
        if isinstance(got, nn.BatchNorm2d):
            torch.testing.assert_close(got.running_mean, want.running_mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got.running_var, want.running_var, rtol=1e-5, atol=1e-6)


def test_layers_in_eval_mode_are_left_alone():
    net = small_net().train()
    net[4].eval()
    before = net[4].running_mean.clone()
    reestimate_batchnorm([net], batches())
    torch.testing.assert_close(net[4].running_mean, before, rtol=0, atol=0)
    assert not torch.equal(net[1].running_mean, torch.zeros(4))


def test_bad_batch_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_batches must be a positive integer"):
        PreciseBatchNorm(num_batches=0)


def fit_ann(callbacks: list, accelerator: str) -> PKKDModule:
    torch.manual_seed(0)
    module = PKKDModule("resnet20", 10, mode="ann", lr=0.05)
    # On a GPU, two identical runs differ (cuDNN/cuBLAS reductions) unless deterministic algorithms are forced.
    trainer = quiet_trainer(max_epochs=2, callbacks=callbacks, accelerator=accelerator, deterministic=True)
    trainer.fit(module, tiny_digits(image_size=16))
    return module.cpu()


@pytest.mark.slow
@pytest.mark.parametrize(
    "accelerator",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_callback_leaves_training_unchanged_and_replaces_the_running_statistics(accelerator, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    plain, precise = fit_ann([], accelerator), fit_ann([PreciseBatchNorm(num_batches=2)], accelerator)
    plain_state, precise_state = plain.state_dict(), precise.state_dict()
    for key, value in plain_state.items():
        if "running" in key or "num_batches_tracked" in key:
            continue
        torch.testing.assert_close(precise_state[key], value, rtol=0, atol=0, msg=f"{key}: training changed")
    bn_means = [key for key in plain_state if key.endswith("running_mean")]
    assert any(not torch.allclose(precise_state[k], plain_state[k]) for k in bn_means)


def test_separate_loader_leaves_a_persistent_training_iterator_alone():
    dataset = torch.utils.data.TensorDataset(torch.arange(12.0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1, persistent_workers=True)
    training = iter(loader)
    first = next(training)
    assert [b[0].tolist() for b in separate_loader(loader)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert [first[0].tolist(), *(b[0].tolist() for b in training)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_separate_loader_starts_a_resumed_epoch_at_its_first_batch():
    class Indices(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 12

        def __getitem__(self, item: tuple[int, int]) -> int:
            return item[0]  # the sampler yields (index, sample seed)

    dataset = Indices()
    whole = [b.tolist() for b in ResumableLoader(dataset, batch_size=3, sampler=SeededBlockSampler(dataset, 3))]
    resumed = ResumableLoader(dataset, batch_size=3, sampler=SeededBlockSampler(dataset, 3))
    resumed.load_state_dict({"epoch": 0, "samples": 6, "seed": 0, "dataset_size": 12})
    assert [b.tolist() for b in resumed] == whole[2:]
    assert [b.tolist() for b in separate_loader(resumed)] == whole

"""CIFAR in memory, augmented on the device: the same images as the per-file pipeline, and the same augmentation
in distribution, drawn per sample so that order and augmentation stay a function of the run's seed."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from pkkd_lightning.data import CIFAR10DataModule, CIFAR10DeviceDataModule
from pkkd_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from pkkd_lightning.data.cifar_device import PAD, apply_augmentation, draw_augmentation


def reference(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """torchvision's way: zero-pad, crop at (dy, dx), flip, normalise (float64 for the comparison)."""
    x = TF.pad(image.double() / 255, [PAD])[:, dy : dy + 32, dx : dx + 32]
    x = x.flip(-1) if flip else x
    return TF.normalize(x, CIFAR10_MEAN, CIFAR10_STD)


def test_the_device_augmentation_is_pad_crop_flip_normalise_for_every_image():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=gen)
    params = torch.tensor([[0, 0, 0], [8, 8, 1], [4, 4, 0], [1, 7, 1], [8, 0, 0], [3, 5, 1]])
    out = apply_augmentation(images, params, CIFAR10_MEAN, CIFAR10_STD)
    assert out.dtype == torch.float32 and out.shape == (6, 3, 32, 32)
    for image, (dy, dx, flip), got in zip(images, params.tolist(), out):
        torch.testing.assert_close(got.double(), reference(image, dy, dx, bool(flip)), rtol=1e-5, atol=1e-5)


def test_draws_cover_every_offset_and_both_flips():
    torch.manual_seed(0)
    params = torch.stack([draw_augmentation(torch.zeros(3, 32, 32))[1] for _ in range(2000)])
    assert set(params[:, 0].tolist()) == set(range(2 * PAD + 1)) == set(params[:, 1].tolist())
    assert 0.45 < params[:, 2].float().mean().item() < 0.55


def test_batches_are_the_per_file_pipelines_images(cifar10_batches):
    kwargs = {"data_dir": cifar10_batches, "batch_size": 8, "num_workers": 0, "augment": False}
    device, files = CIFAR10DeviceDataModule(**kwargs), CIFAR10DataModule(**kwargs)
    for data in (device, files):
        data.setup("fit")
    raw = next(iter(device.test_dataloader()))
    images, labels = device.on_after_batch_transfer(raw, 0)
    expected_images, expected_labels = next(iter(files.test_dataloader()))
    torch.testing.assert_close(images, expected_images, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, expected_labels)


def test_training_batches_are_augmented_per_sample_seed_and_repeat_exactly(cifar10_batches):
    def first_batch(augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        data = CIFAR10DeviceDataModule(cifar10_batches, batch_size=8, num_workers=0, augment=augment)
        data.setup("fit")
        return data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)

    torch.manual_seed(123)
    augmented, labels = first_batch(True)
    torch.manual_seed(456)  # the global generator plays no part
    again, labels_again = first_batch(True)
    torch.testing.assert_close(again, augmented, rtol=0, atol=0)
    assert torch.equal(labels, labels_again)
    plain, plain_labels = first_batch(False)
    assert torch.equal(plain_labels, labels) and not torch.equal(plain, augmented)

"""LightningDataModules: CIFAR-10/100, ImageNet, any ImageFolder tree and the scikit-learn digits (works offline)."""

from pkkd_lightning.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from pkkd_lightning.data.cifar_device import CIFAR10DeviceDataModule
from pkkd_lightning.data.digits import DigitsDataModule
from pkkd_lightning.data.imagefolder import ImageFolderDataModule
from pkkd_lightning.data.imagenet import ImageNetDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR10DeviceDataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
]

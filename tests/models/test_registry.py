"""Every registered model, in both flavours: builds, runs, and the CNN/ANN twins match."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.models import build_model, list_models
from pkkd_lightning.models.imagenet import LogitBatchNormHead
from pkkd_lightning.ops import Adder2d

CIFAR = ("resnet20", "resnet32", "resnet56", "vgg_small")
IMAGENET = ("resnet18", "resnet50")
#: Layers AdderNet keeps multiplication-based (stem, and the classifier when it is a convolution).
KEPT_CONVS = {
    "resnet20": {"conv1", "fc"},
    "resnet32": {"conv1", "fc"},
    "resnet56": {"conv1", "fc"},
    "vgg_small": {"layer1.conv1"},
    "resnet18": {"conv1"},
    "resnet50": {"conv1"},
}


def _input(name: str) -> torch.Tensor:
    size = 32 if name in CIFAR else 64
    return torch.randn(2 if name in CIFAR else 1, 3, size, size)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family() -> None:
    assert set(list_models()) == set(CIFAR + IMAGENET) == set(KEPT_CONVS)


@pytest.mark.parametrize("layer_type", ["conv", "adder"])
@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_builds_and_returns_logits(name: str, layer_type: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, layer_type, num_classes=7).eval()
    x = _input(name)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (x.shape[0], 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_twins_share_paths_keys_and_parameter_counts(name: str) -> None:
    cnn, ann = build_model(name, "conv"), build_model(name, "adder")
    assert [n for n, _ in cnn.named_modules()] == [n for n, _ in ann.named_modules()]
    assert list(cnn.state_dict()) == list(ann.state_dict())
    assert _n_params(cnn) == _n_params(ann)
    assert not any(isinstance(m, Adder2d) for m in cnn.modules())
    convs = {n for n, m in cnn.named_modules() if isinstance(m, nn.Conv2d)}
    adders = {n for n, m in ann.named_modules() if isinstance(m, Adder2d)}
    assert adders == convs - KEPT_CONVS[name]
    for path in KEPT_CONVS[name]:
        assert type(ann.get_submodule(path)) is nn.Conv2d


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_batchnorm_follows_every_adder_layer(name: str) -> None:
    ann = build_model(name, "adder")
    for parent in ann.modules():
        children = list(parent.children())
        for child, following in zip(children, children[1:] + [None]):
            if isinstance(child, Adder2d):
                assert isinstance(following, nn.BatchNorm2d)
                assert following.num_features == child.out_channels


@pytest.mark.parametrize(("name", "expected"), [("resnet20", 272_484), ("resnet32", 466_916), ("vgg_small", 4_660_106)])
def test_parameter_counts(name: str, expected: int) -> None:
    # ResNet-20 with option-B shortcuts and the BN on 10 logits: 0.27M as in He et al. / AdderNet.
    assert _n_params(build_model(name)) == expected


def test_cifar_resnet_depths() -> None:
    for name, blocks in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        model = build_model(name)
        assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [blocks] * 3
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 6 * blocks + 2 + 2  # + 2 shortcuts


@pytest.mark.parametrize("layer_type", ["conv", "adder"])
def test_resnet20_every_parameter_gets_a_finite_gradient(layer_type: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", layer_type).train()
    logits = model(torch.randn(2, 3, 32, 32))
    nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    for path, param in model.named_parameters():
        assert param.grad is not None, path
        assert torch.isfinite(param.grad).all(), path
        assert param.grad.abs().sum() > 0, path


def test_adder_kwargs_reach_the_adder_layers() -> None:
    ann = build_model("resnet20", "adder", adder_kwargs={"eta": 0.1, "backend": "unfold"})
    adders = [m for m in ann.modules() if isinstance(m, Adder2d)]
    assert adders and all(m.eta == 0.1 and m.backend == "unfold" for m in adders)


def test_errors_name_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet21")
    with pytest.raises(ValueError, match="'conv', 'adder'"):
        build_model("resnet20", "shift")
    with pytest.raises(ValueError, match="adder_kwargs"):
        build_model("resnet20", "conv", adder_kwargs={"eta": 0.1})
    with pytest.raises(ValueError, match="pretrained"):
        build_model("resnet18", pretrained=True)


def test_list_models_names_the_builtin_models() -> None:
    from pkkd_lightning.models.specs import BUILTIN_MODELS

    assert set(BUILTIN_MODELS) == set(list_models()) == {
        "resnet20", "resnet32", "resnet56", "vgg_small", "resnet18", "resnet50"
    }  # fmt: skip


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnets_end_in_the_official_batchnorm_head_in_both_twins(name: str) -> None:
    cnn, ann = build_model(name, "conv", 7), build_model(name, "adder", 7)
    for model in (cnn, ann):
        assert isinstance(model.fc, LogitBatchNormHead)
        assert isinstance(model.fc.fc, nn.Linear) and model.fc.fc.bias is not None
        assert isinstance(model.fc.bn, nn.BatchNorm1d) and model.fc.bn.num_features == 7
    assert sum(p.numel() for p in cnn.parameters()) == sum(p.numel() for p in ann.parameters())
    # Eval mode, two images: the head normalises the logits with its running statistics.
    assert ann.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_the_timm_head_is_one_option_away() -> None:
    assert type(build_model("resnet18", "conv", 7, head="timm").fc) is nn.Linear
    with pytest.raises(ValueError, match="'official', 'timm'"):
        build_model("resnet18", "conv", 7, head="plain")

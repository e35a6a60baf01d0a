"""Architecture specs (pkkd_lightning.models.specs): built-in names, timm models, a user's factory, registered
names; the keep policy; unknown names refused with close matches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from pkkd_lightning.models import build_model, list_models, register_model
from pkkd_lightning.models.adderize import expand_keep
from pkkd_lightning.modes import build_network
from pkkd_lightning.ops import Adder2d

TIMM = ["timm:resnet10t", "timm:mobilenetv3_small_050"]


def adder_paths(model: nn.Module) -> list[str]:
    return [path for path, m in model.named_modules() if isinstance(m, Adder2d)]


@pytest.mark.parametrize("spec", TIMM)
def test_a_timm_model_builds_as_twins_with_the_same_keys_and_official_adder_init(spec: str) -> None:
    torch.manual_seed(0)
    cnn, ann = build_model(spec, "conv", 7), build_model(spec, "adder", 7)
    assert cnn.state_dict().keys() == ann.state_dict().keys()
    assert cnn(torch.randn(2, 3, 32, 32)).shape == ann(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    adders = [m for m in ann.modules() if isinstance(m, Adder2d)]
    assert adders and all(
        0.8 < float(m.weight.detach().std()) < 1.2 for m in adders if m.weight.numel() > 500
    )  # N(0, 1)
    first_conv = next(path for path, m in ann.named_modules() if isinstance(m, nn.Conv2d))
    assert not isinstance(ann.get_submodule(first_conv), Adder2d)  # the stem stays a convolution


def test_depthwise_layers_of_a_mobilenet_become_grouped_adder_layers() -> None:
    ann = build_model("timm:mobilenetv3_small_050", "adder", 5)
    grouped = [m for m in ann.modules() if isinstance(m, Adder2d) and m.groups > 1]
    assert grouped and all(m.groups == m.in_channels for m in grouped)


def test_the_twins_of_a_run_start_from_the_run_seed() -> None:
    torch.manual_seed(3)
    first = build_network("timm:resnet10t", "adder", 4)
    torch.manual_seed(3)
    second = build_network("timm:resnet10t", "adder", 4)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_a_user_factory_is_imported_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    ann = build_model("my_nets:tiny", "adder", 3)
    assert adder_paths(ann) == ["3"] and ann(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="module 'my_nets' has no callable 'huge'"):
        build_model("my_nets:huge", "conv", 3)
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        build_model("no_such_module:net", "conv", 3)


def test_a_registered_name_builds_its_factory() -> None:
    @register_model("test_specs_tiny")
    def tiny(num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))

    assert "test_specs_tiny" in list_models()
    assert adder_paths(build_model("test_specs_tiny", "adder", 2)) == ["1"]
    with pytest.raises(ValueError, match="registered already"):
        register_model("test_specs_tiny", lambda num_classes: nn.Identity())
    with pytest.raises(ValueError, match="not built in"):
        register_model("resnet20", tiny)


@pytest.mark.parametrize(
    ("spec", "suggested"),
    [("resnet2", "resnet20"), ("timm:mobilenetv3_smal_050", "timm:mobilenetv3_small_050"),
     ("mobilenetv3_small_05", "timm:mobilenetv3_small_0")],
)  # fmt: skip
def test_an_unknown_name_is_refused_with_close_matches(spec: str, suggested: str) -> None:
    with pytest.raises(ValueError, match="model.arch") as error:
        build_model(spec, "conv")
    assert suggested in str(error.value)


def test_keep_takes_paths_and_patterns_on_top_of_the_stem() -> None:
    ann = build_model("timm:mobilenetv3_small_050", "adder", 5, keep=["*.se.*", "conv_head"])
    kept = [p for p, m in ann.named_modules() if type(m) is nn.Conv2d]
    assert "conv_stem" in kept and "conv_head" in kept and any(".se." in p for p in kept)
    assert not [p for p in adder_paths(ann) if ".se." in p]
    with pytest.raises(ValueError, match=r"model.keep: '\*.attn.\*' matches no convolution"):
        expand_keep(build_model("timm:resnet10t", "conv", 2), ["*.attn.*"])

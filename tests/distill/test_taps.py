"""FeatureTaps: shapes, conv-side norms against unfolded patches, validation, hook lifetime, default paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pkkd_lightning.distill import FeatureTaps, TapRecord, default_tap_paths
from pkkd_lightning.models import build_model, list_models
from pkkd_lightning.ops import Adder2d

DEFAULT_TAPS = {
    "resnet20": ["layer1.2.conv2", "layer2.2.conv2", "layer3.2.conv2"],
    "resnet32": ["layer1.4.conv2", "layer2.4.conv2", "layer3.4.conv2"],
    "resnet56": ["layer1.8.conv2", "layer2.8.conv2", "layer3.8.conv2"],
    "vgg_small": ["layer1.conv2", "layer2.conv2", "layer3.conv2"],
    "resnet18": ["layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2"],
    "resnet50": ["layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3", "layer4.2.conv3"],
}
#: Tap paths that cover a stride-2 layer, a 1x1 projection and a stage's last layer of ResNet-20.
PATHS = ["layer2.0.conv1", "layer2.0.downsample.0", "layer3.2.conv2"]
SHAPES = {"layer2.0.conv1": (2, 32, 16, 16), "layer2.0.downsample.0": (2, 32, 16, 16), "layer3.2.conv2": (2, 64, 8, 8)}


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", sorted(DEFAULT_TAPS))
def test_default_tap_paths(name: str) -> None:
    assert set(DEFAULT_TAPS) == set(list_models())
    for layer_type in ("conv", "adder"):
        assert default_tap_paths(build_model(name, layer_type)) == DEFAULT_TAPS[name]


def test_conv_taps_shapes_and_norms_match_unfolded_patches() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20").double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    inputs: dict[str, torch.Tensor] = {}
    pre = [
        model.get_submodule(p).register_forward_pre_hook(lambda m, a, p=p: inputs.__setitem__(p, a[0])) for p in PATHS
    ]
    taps = FeatureTaps(model, PATHS)
    with taps:
        model(x)
    for handle in pre:
        handle.remove()
    records = taps.pop()
    assert list(records) == PATHS
    for path, record in records.items():
        conv = model.get_submodule(path)
        assert isinstance(record, TapRecord)
        assert record.output.shape == SHAPES[path]
        assert record.patch_sq_norms.shape == (2, 1, *SHAPES[path][2:])
        assert record.filter_sq_norms.shape == (conv.out_channels,)
        patches = F.unfold(inputs[path], conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (N, k, L)
        expected = patches.square().sum(1).reshape(record.patch_sq_norms.shape)
        torch.testing.assert_close(record.patch_sq_norms, expected)
        torch.testing.assert_close(record.filter_sq_norms, conv.weight.flatten(1).square().sum(1))
        torch.testing.assert_close(record.output, conv(inputs[path]))
        # The Gaussian-kernel distance the norms exist for: ||x - f||^2 = ||x||^2 + ||f||^2 - 2 x.f
        diff = patches.unsqueeze(1) - conv.weight.flatten(1).reshape(1, conv.out_channels, -1, 1)
        sq_dist = record.patch_sq_norms + record.filter_sq_norms.view(1, -1, 1, 1) - 2 * record.output
        torch.testing.assert_close(sq_dist, diff.square().sum(2).reshape(record.output.shape))
    assert taps.pop() == {}
    assert _no_hooks(model)
    # Everything stays in the graph of the full model (no in-place op invalidates what the taps saved).
    loss = sum(r.output.mean() + r.patch_sq_norms.mean() + r.filter_sq_norms.mean() for r in records.values())
    loss.backward()
    assert x.grad is None and model.conv1.weight.grad is not None


def test_conv_norms_are_differentiable() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    with FeatureTaps(conv_model := nn.Sequential(conv), ["0"]) as taps:
        conv_model(x)
    record = taps.pop()["0"]
    (record.patch_sq_norms.sum() + record.filter_sq_norms.sum()).backward()
    torch.testing.assert_close(conv.weight.grad, 2 * conv.weight.detach())
    assert x.grad is not None and (x.grad != 0).any()


def test_adder_taps_record_output_only() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", "adder").eval()
    with FeatureTaps(model, PATHS + ["conv1"]) as taps:
        model(torch.randn(2, 3, 32, 32))
    records = taps.pop()
    for path in PATHS:
        assert isinstance(model.get_submodule(path), Adder2d)
        assert records[path].output.shape == SHAPES[path]
        assert records[path].patch_sq_norms is None and records[path].filter_sq_norms is None
        assert (records[path].output <= 0).all()  # -||x - f||_1
    assert records["conv1"].patch_sq_norms is not None  # the stem stays a conv
    assert _no_hooks(model)


def test_hooks_exist_only_while_active() -> None:
    model = build_model("resnet20")
    taps = FeatureTaps(model, PATHS)
    assert _no_hooks(model) and not taps.active
    with taps:
        assert taps.active and all(len(model.get_submodule(p)._forward_hooks) == 1 for p in PATHS)
        with pytest.raises(RuntimeError, match="already active"):
            taps.__enter__()
    assert _no_hooks(model) and not taps.active
    taps.remove()
    with pytest.raises(ValueError), taps:
        raise ValueError("hooks are removed on errors too")
    assert _no_hooks(model)


@pytest.mark.parametrize("path", ["layer9.0.conv1", "layer1.0.bn1", "layer1", "fc_bn", "", "layer1.0.conv1.weight"])
def test_bad_paths_raise_naming_the_path(path: str) -> None:
    with pytest.raises(ValueError, match=rf"{path!r}.*valid conv paths.*layer1\.0\.conv1"):
        FeatureTaps(build_model("resnet20"), [path])


def test_unsupported_paths_raise() -> None:
    with pytest.raises(ValueError, match="not the string"):
        FeatureTaps(build_model("resnet20"), "conv1")
    with pytest.raises(ValueError, match="duplicates"):
        FeatureTaps(build_model("resnet20"), ["conv1", "conv1"])
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        FeatureTaps(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")), ["0"])
    with pytest.raises(ValueError, match="no bias-free adder layer"):
        default_tap_paths(nn.Sequential(nn.Conv2d(3, 4, 3)))  # a CNN without stages: nothing to distil

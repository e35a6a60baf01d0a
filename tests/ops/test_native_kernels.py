"""The native kernels at every vector width, and the forward's float32 rounding on hard inputs."""

from __future__ import annotations

import pytest
import torch

from pkkd_lightning.ops import native_backend
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.native_backend import NativeBackend
from pkkd_lightning.ops.reference import reference_forward
from tests.ops.test_adder_grouped import grouped_problem, per_group_reference

# (C_in, C_out, groups), (kernel, stride, padding, dilation): channel counts that fill no vector exactly, groups,
# depthwise, and positions that leave a partial register tile.
PROBLEMS = [
    ((5, 19, 1), ((3, 3), 1, 1, 1)),
    ((40, 36, 1), ((3, 3), 2, 1, 1)),
    ((12, 18, 3), ((3, 3), 1, 2, 2)),
    ((20, 20, 20), ((3, 3), 1, 1, 1)),
    ((9, 33, 1), ((1, 1), 2, 0, 1)),
]


@pytest.fixture
def build_width(monkeypatch):
    """Rebuild the library at a given vector width (``$PKKD_LIGHTNING_VECTOR_BYTES``) for one test."""

    def build(width: str | None) -> None:
        if width is None:
            monkeypatch.delenv("PKKD_LIGHTNING_VECTOR_BYTES", raising=False)
        else:
            monkeypatch.setenv("PKKD_LIGHTNING_VECTOR_BYTES", width)
        native_backend.load_library.cache_clear()

    yield build
    monkeypatch.delenv("PKKD_LIGHTNING_VECTOR_BYTES", raising=False)
    native_backend.load_library.cache_clear()


def run_native(x, w, g, groups, geom):
    backend = NativeBackend(groups)
    return backend.forward(x, w, geom, None), *backend.backward(g, x, w, geom, None, True, True)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_every_vector_width_gives_the_same_bits(build_width, dtype):
    """128-, 256- and 512-bit builds (widths the host lacks are emulated by the compiler) sum every output in the
    same order, so they agree to the bit; float64 also matches the reference."""
    problems = [
        grouped_problem(c, geo, dtype=dtype, batch=2, size=(9, 7), seed=i) for i, (c, geo) in enumerate(PROBLEMS)
    ]
    groups = [c[2] for c, _ in PROBLEMS]
    results = {}
    for width in ("16", "32", "64"):
        build_width(width)
        assert native_backend.load_library().adder_vector_bytes() == int(width)
        results[width] = [run_native(*p[:3], k, p[3]) for p, k in zip(problems, groups)]
    for width in ("16", "64"):
        for got_all, want_all in zip(results[width], results["32"]):
            for got, want in zip(got_all, want_all):
                assert torch.equal(got, want)
    if dtype == torch.float64:
        for (x, w, g, geom), k, got_all in zip(problems, groups, results["32"]):
            for got, want in zip(got_all, per_group_reference(x, w, g, k, geom)):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_bad_vector_width_is_named(build_width):
    build_width("48")
    with pytest.raises(ValueError, match=r"PKKD_LIGHTNING_VECTOR_BYTES.*16, 32, 64.*'48'"):
        native_backend.load_library()


@pytest.mark.parametrize(
    "inputs,filters",
    [
        ((0.0, 1.0), (0.0, 0.5)),  # the usual: inputs after BatchNorm, small filters
        ((0.0, 100.0), (0.0, 0.5)),  # large activations (ReLU of a wide input)
        ((0.0, 1000.0), (0.0, 1.0)),  # very large activations
        ((50.0, 1.0), (50.0, 1.0)),  # inputs and filters sharing a large offset: the min identity's hard case
        ((1.0, 0.01), (1.0, 0.01)),  # inputs close to the filters
    ],
    ids=("bn", "x100", "x1000", "offset50", "tight"),
)
def test_float32_forward_stays_within_tolerance_on_hard_inputs(inputs, filters):
    """The forward sums min(x, f) (|x - f| = x + f - 2 min(x, f)) in blocks of 32 terms. Over these 576-term
    patches its float32 result stays within 2e-6 of the output's scale of the float64 reference: the 1e-6 that
    ``test_backend_float32_matches_float64_reference`` allows 144-term patches, grown with the square root of the
    term count as rounding errors do. (Measured: 2e-7 to 1.1e-6; the earlier kernels, which summed |x - f|
    directly, 1.1e-6 to 1.3e-6 on the same inputs.)"""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 8, 8, generator=gen, dtype=torch.float64) * inputs[1] + inputs[0]
    if inputs[1] >= 100:
        x = x.clamp(min=0)
    w = torch.randn(64, 64, 3, 3, generator=gen, dtype=torch.float64) * filters[1] + filters[0]
    geom = AdderGeometry((3, 3), (1, 1), (1, 1), (1, 1))
    want = reference_forward(x, w, geom)
    got = NativeBackend().forward(x.float(), w.float(), geom, None).double()
    assert ((got - want).abs().max() / want.abs().max()).item() < 2e-6

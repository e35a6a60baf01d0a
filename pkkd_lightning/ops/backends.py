"""Adder backends by name, and the choice ``auto`` makes.

| name        | forward / input-gradient reduction                    | memory          | needs            |
|-------------|-------------------------------------------------------|-----------------|------------------|
| `reference` | materialises every patch-filter difference            | O(N L C_out k)  | nothing          |
| `unfold`    | ``torch.cdist(p=1)`` / blocked materialisation        | bounded chunks  | nothing          |
| `fused`     | TorchInductor-compiled fused reductions (CPU and CUDA) | bounded chunks  | ``torch.compile``|
| `native`    | C kernels vectorised over channels (CPU, float32/64)   | like conv2d     | a C compiler     |
| `triton`    | tiled Triton kernels on the input in place (CUDA)      | like conv2d     | ``triton``, CUDA |

``auto`` picks, for the tensor at hand, the first usable of ``native`` (CPU float32/float64), ``triton``
(CUDA), ``fused`` and ``unfold``. Whether ``native`` builds, whether the Triton kernels and ``torch.compile``
work on a device type is probed once per process; a failure (no compiler, an unsupported platform) is logged as
a warning and the next one is used.

The table describes ``groups=1``. ``native`` runs grouped and depthwise layers in its own kernels; the other
backends run once per group, or, for depthwise layers, all groups at once in plain torch operations: see
:mod:`pkkd_lightning.ops.grouped`.
"""

from __future__ import annotations

import functools
import logging
from typing import Literal, Protocol

import torch

from pkkd_lightning.ops.fused_backend import FusedKernels
from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.native_backend import SUPPORTED_DTYPES, NativeBackend, load_library
from pkkd_lightning.ops.reference import reference_backward, reference_forward
from pkkd_lightning.ops.rowwise import RowKernels, rowwise_backward, rowwise_forward
from pkkd_lightning.ops.triton_backend import TritonBackend, runs_on, triton_forward
from pkkd_lightning.ops.unfold_backend import UnfoldKernels
from pkkd_lightning.validation import check_choice, choices

log = logging.getLogger(__name__)

#: Names of the adder implementations; ``auto`` picks one per tensor (see the module docstring).
AdderBackendName = Literal["auto", "reference", "unfold", "fused", "native", "triton"]
BACKENDS: tuple[str, ...] = choices(AdderBackendName)


class AdderBackend(Protocol):
    """Forward and AdderNet-rule backward of ``Y = -||X - F||_1`` over sliding windows."""

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, chunk_bytes: int | None
    ) -> torch.Tensor: ...

    def backward(
        self,
        grad_out: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        geom: AdderGeometry,
        chunk_bytes: int | None,
        need_input_grad: bool,
        need_weight_grad: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...


class ReferenceBackend:
    """The materialising reference (``chunk_bytes`` is ignored: it never chunks)."""

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        return reference_forward(x, weight, geom)

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        return reference_backward(grad_out, x, weight, geom)


class RowBackend:
    """A memory-bounded backend made of two :class:`RowKernels` reductions and the chunked driver."""

    def __init__(self, kernels: RowKernels) -> None:
        self.kernels = kernels

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        return rowwise_forward(self.kernels, x, weight, geom, chunk_bytes)

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        return rowwise_backward(self.kernels, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad)


_BY_NAME: dict[str, AdderBackend] = {
    "reference": ReferenceBackend(),
    "unfold": RowBackend(UnfoldKernels()),
    "fused": RowBackend(FusedKernels()),
    "native": NativeBackend(),
    "triton": TritonBackend(),
}


def check_backend_name(backend: str, key: str = "backend") -> None:
    """Raise ``ValueError`` naming ``key`` and the accepted values if ``backend`` is not one of :data:`BACKENDS`."""
    check_choice(key, backend, AdderBackendName)


@functools.cache
def fused_available(device_type: str) -> bool:
    """Whether the fused kernels compile and agree with ``unfold`` on ``device_type`` (probed once)."""
    rows = torch.randn(5, 7, device=device_type)
    weight = torch.randn(3, 7, device=device_type)
    grad = torch.randn(5, 3, device=device_type)
    fused, unfold = FusedKernels(), UnfoldKernels()
    try:
        ok = torch.allclose(fused.l1_distance(rows, weight), unfold.l1_distance(rows, weight), atol=1e-4) and (
            torch.allclose(
                fused.clipped_input_grad(grad, rows, weight),
                unfold.clipped_input_grad(grad, rows, weight),
                atol=1e-4,
            )
        )
    except Exception as err:  # torch.compile raises many types (no compiler, unsupported platform, ...)
        log.warning("torch.compile is unusable on %s (%s); adder layers use 'unfold'.", device_type, err)
        return False
    if not ok:
        log.warning("fused adder kernels disagree with 'unfold' on %s; adder layers use 'unfold'.", device_type)
    return ok


@functools.cache
def triton_available(device_type: str) -> bool:
    """Whether the Triton kernels run on ``device_type`` and agree with the reference there (probed once)."""
    if not runs_on(device_type):
        return False
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 3, 5, 4, generator=gen), torch.randn(4, 3, 3, 3, generator=gen)
    geom = AdderGeometry((3, 3), (1, 1), (1, 1), (1, 1))
    try:
        out = triton_forward(x.to(device_type), weight.to(device_type), geom).cpu()
    except Exception as err:  # triton raises many types (no driver, unsupported GPU, compiler errors, ...)
        log.warning("Triton adder kernels are unusable on %s (%s); using the next backend.", device_type, err)
        return False
    ok = torch.allclose(out, reference_forward(x, weight, geom), atol=1e-4)
    if not ok:
        log.warning("Triton adder kernels disagree with the reference on %s; using the next backend.", device_type)
    return ok


@functools.cache
def native_available() -> bool:
    """Whether the native CPU kernels build and load (probed once)."""
    try:
        load_library()
    except (RuntimeError, OSError) as err:
        log.warning("native adder kernels unavailable (%s); using the next backend.", err)
        return False
    return True


def get_backend(name: AdderBackendName, x: torch.Tensor) -> AdderBackend:
    """The backend called ``name`` (already validated); ``auto`` resolves for ``x``'s device and dtype."""
    if name == "auto":
        if x.device.type == "cpu" and x.dtype in SUPPORTED_DTYPES and native_available():
            name = "native"
        elif x.device.type == "cuda" and triton_available("cuda"):
            name = "triton"
        else:
            name = "fused" if fused_available(x.device.type) else "unfold"
    return _BY_NAME[name]

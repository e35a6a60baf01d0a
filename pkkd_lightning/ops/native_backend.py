"""The fast CPU path: hand-written C kernels (``csrc/adder_cpu.c``) loaded through ctypes.

The kernels read the zero-padded input in place (implicit im2col), so the only extra memory is one padded copy
of the input (and of its gradient in the backward pass), as for a convolution. The library is compiled on first
use with the system C compiler (``cc``/``gcc``, about a second, ``-O3 -march=native``; ``$PKKD_LIGHTNING_MARCH``
chooses another target, e.g. ``x86-64-v2``) and cached under ``$PKKD_LIGHTNING_CACHE`` (default
``~/.cache/pkkd_lightning``), keyed by the source, the flags and the CPU, so a cache shared between machines never
serves a binary built for another processor. Every output sums its terms in the same order whatever the vector
width, so the target changes the speed, not the results.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from pkkd_lightning.ops.geometry import AdderGeometry
from pkkd_lightning.ops.weight_grad import adder_weight_grad

SOURCE_DIR = Path(__file__).parent / "csrc"


def compiler_flags() -> tuple[str, ...]:
    """The build flags: ``-march`` from ``$PKKD_LIGHTNING_MARCH`` (default ``native``, the host's vector units)."""
    return (
        "-O3",
        f"-march={os.environ.get('PKKD_LIGHTNING_MARCH', 'native')}",
        "-std=c99",
        "-fPIC",
        "-shared",
        "-pthread",
    )


#: Tried first: with OpenMP the kernels share PyTorch's thread pool (see csrc/adder_cpu.c, parallel_for).
OPENMP_FLAGS = ("-fopenmp",)
SUPPORTED_DTYPES = (torch.float32, torch.float64)

_DIMS = ("N", "C", "H", "W", "O", "KH", "KW", "SH", "SW", "DH", "DW", "HO", "WO")


class _AdderArgs(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p),
        ("w", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
    ]
    _fields_ += [(name, ctypes.c_long) for name in _DIMS]


def _cpu_fingerprint() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2]
    return platform.machine() + "|".join(lines)


def _cache_dir() -> Path:
    return Path(os.environ.get("PKKD_LIGHTNING_CACHE", Path.home() / ".cache" / "pkkd_lightning"))


@functools.cache
def load_library() -> ctypes.CDLL:
    """Compile (once per source, flags and CPU) and load the kernel library.

    Raises:
        RuntimeError: no C compiler was found or the build failed; the message says which.
    """
    sources = sorted(SOURCE_DIR.iterdir())
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    digest.update(" ".join(compiler_flags() + OPENMP_FLAGS).encode() + _cpu_fingerprint().encode())
    target = _cache_dir() / f"adder_cpu_{digest.hexdigest()[:16]}.so"
    if not target.exists():
        _build(target)
    lib = ctypes.CDLL(str(target))
    for name in ("adder_forward", "adder_input_grad"):
        getattr(lib, name).argtypes = [ctypes.POINTER(_AdderArgs), ctypes.c_int, ctypes.c_int]
        getattr(lib, name).restype = None
    lib.adder_filter_block.restype = ctypes.c_int
    return lib


def pack_filters(weight: torch.Tensor, block: int) -> torch.Tensor:
    """(C_out, C_in, kh, kw) filters as (ceil(C_out / block), k, block), zero-padded: the forward kernel's layout."""
    w2d = weight.reshape(weight.shape[0], -1)
    w2d = F.pad(w2d, (0, 0, 0, -w2d.shape[0] % block))
    return w2d.reshape(-1, block, w2d.shape[1]).transpose(1, 2).contiguous()


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc, or $CC) found to build the native adder kernels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        errors = []
        for extra in (OPENMP_FLAGS, ()):  # without OpenMP the kernels fall back to pthreads
            cmd = [compiler, *compiler_flags(), *extra, str(SOURCE_DIR / "adder_cpu.c"), "-o", str(built)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(built, target)  # atomic: concurrent processes (DDP ranks) never load a partial file
                return
            errors.append(f"{' '.join(cmd)}\n{result.stderr}")
    raise RuntimeError("building the native adder kernels failed:\n" + "\n".join(errors))


def _args(xp: torch.Tensor, weight: torch.Tensor, geom: AdderGeometry, out_hw: tuple[int, int]) -> _AdderArgs:
    n, c, h, w = xp.shape
    o, _, kh, kw = weight.shape
    dims = (n, c, h, w, o, kh, kw, *geom.stride, *geom.dilation, *out_hw)
    return _AdderArgs(xp.data_ptr(), weight.data_ptr(), None, None, *dims)


def _pad(x: torch.Tensor, geom: AdderGeometry) -> torch.Tensor:
    ph, pw = geom.padding
    return F.pad(x, (pw, pw, ph, ph)).contiguous() if ph or pw else x.contiguous()


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu" or x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the native adder backend needs float32/float64 CPU tensors, got {x.dtype} on {x.device}")


class NativeBackend:
    """:class:`~pkkd_lightning.ops.backends.AdderBackend` running the C kernels (``chunk_bytes`` is unused:
    nothing proportional to the patch count is ever allocated)."""

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        _check(x)
        lib = load_library()
        xp, packed = _pad(x, geom), pack_filters(weight, lib.adder_filter_block())
        out_hw = geom.output_size(x.shape[2], x.shape[3])
        out = x.new_empty(x.shape[0], weight.shape[0], *out_hw)
        args = _args(xp, weight, geom, out_hw)
        args.w, args.out = packed.data_ptr(), out.data_ptr()
        lib.adder_forward(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
        return out

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        _check(x)
        grad_input = grad_weight = None
        if need_input_grad:
            xp, weight_c = _pad(x, geom), weight.contiguous()
            grad_rows_first = grad_out.permute(0, 2, 1, 3).contiguous()  # (N, HO, O, WO): the kernel's layout
            grad_padded = torch.empty_like(xp)
            args = _args(xp, weight_c, geom, tuple(grad_out.shape[2:]))
            args.g, args.out = grad_rows_first.data_ptr(), grad_padded.data_ptr()
            load_library().adder_input_grad(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
            ph, pw = geom.padding
            grad_input = grad_padded[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
        if need_weight_grad:
            grad_weight = adder_weight_grad(grad_out, x, weight, geom)
        return grad_input, grad_weight

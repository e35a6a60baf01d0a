"""The fast CPU path: hand-written C kernels (``csrc/adder_cpu.c``) loaded through ctypes.

The forward reads the zero-padded input in place (implicit im2col) and vectorises over output channels; the input
gradient works on channels-last copies of the input, the filters and the output gradient and vectorises over input
channels (``csrc/adder_kernels.inc`` has the layouts). Nothing proportional to the patch count is allocated: the
extra memory is a few copies of the input and output, as for a convolution. The library is compiled on first use
with the system C compiler (``cc``/``gcc``, about a second, ``-O3 -march=native``; ``$PKKD_LIGHTNING_MARCH``
chooses another target, e.g. ``x86-64-v2``) and cached under ``$PKKD_LIGHTNING_CACHE`` (default
``~/.cache/pkkd_lightning``), keyed by the source, the flags and the CPU, so a cache shared between machines never
serves a binary built for another processor. The vector width is the target's widest (512-bit with AVX-512, 256
with AVX2, 128 otherwise); ``$PKKD_LIGHTNING_VECTOR_BYTES`` (16, 32 or 64) sets another, emulated by the compiler
where the target lacks it. Every output sums its terms in the same order whatever the width, so the width changes
the speed, not the results; a target without fused multiply-add rounds the input gradient's products separately.
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
from pkkd_lightning.ops.window_sums import grouped_window_sums

SOURCE_DIR = Path(__file__).parent / "csrc"


VECTOR_BYTES = ("16", "32", "64")


def compiler_flags() -> tuple[str, ...]:
    """The build flags: ``-march`` from ``$PKKD_LIGHTNING_MARCH`` (default ``native``, the host's vector units) and
    the vector width from ``$PKKD_LIGHTNING_VECTOR_BYTES`` (default: the target's widest).

    Raises:
        ValueError: ``$PKKD_LIGHTNING_VECTOR_BYTES`` is not 16, 32 or 64.
    """
    width = os.environ.get("PKKD_LIGHTNING_VECTOR_BYTES")
    if width is not None and width not in VECTOR_BYTES:
        raise ValueError(f"$PKKD_LIGHTNING_VECTOR_BYTES must be one of {', '.join(VECTOR_BYTES)}; got {width!r}")
    return (
        "-O3",
        f"-march={os.environ.get('PKKD_LIGHTNING_MARCH', 'native')}",
        *((f"-DVBYTES={width}", "-Wno-psabi") if width else ()),
        "-std=c99",
        "-fPIC",
        "-shared",
        "-pthread",
    )


#: Tried first: with OpenMP the kernels share PyTorch's thread pool (see csrc/adder_cpu.c, parallel_for).
OPENMP_FLAGS = ("-fopenmp",)
SUPPORTED_DTYPES = (torch.float32, torch.float64)

#: The integer fields of the kernels' argument struct (``AdderArgs`` in csrc/adder_cpu.c), in order.
# fmt: off
_DIMS = (
    "N", "C", "H", "W", "O", "G", "KH", "KW", "SH", "SW", "DH", "DW", "HO", "WO",  # both kernels
    "NV",  # forward
    "XH", "XW", "PH", "PW", "CP",  # input gradient
)
# fmt: on


class _AdderArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("x", "w", "g", "sx", "sf", "out")]
    _fields_ += [(name, ctypes.c_long) for name in _DIMS]


def _cpu_fingerprint() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2]
    return platform.machine() + "|".join(lines)


def host_vector_isa() -> str:
    """The widest vector instruction set the CPU reports (``AVX-512``, ``AVX2``, ``AVX``, ``SSE2``, ``NEON``)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    flags = {word for line in info.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    named = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("asimd", "NEON"), ("sse2", "SSE2"))
    return next((name for flag, name in named if flag in flags), platform.machine())


def kernel_build() -> str:
    """What the native kernels were built for, for benchmark headers: ``AVX2 host, 256-bit kernels (-march=native)``."""
    try:
        bits = 8 * load_library().adder_vector_bytes()
    except RuntimeError as error:
        return f"{host_vector_isa()} host, no native kernels ({str(error).splitlines()[0]})"
    return f"{host_vector_isa()} host, {bits}-bit kernels (-march={os.environ.get('PKKD_LIGHTNING_MARCH', 'native')})"


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
    for name in ("adder_forward", "adder_input_grad", "adder_depthwise_forward", "adder_depthwise_input_grad"):
        getattr(lib, name).argtypes = [ctypes.POINTER(_AdderArgs), ctypes.c_int, ctypes.c_int]
        getattr(lib, name).restype = None
    for name in ("adder_vector_bytes", "adder_forward_block_vectors"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


def pack_filters(weight: torch.Tensor, groups: int, block: int) -> torch.Tensor:
    """(C_out, C_in / g, kh, kw) filters as (g, ceil(C_out / g / block), k, block), each group's filters zero-padded
    to a multiple of ``block``: the forward kernel's layout."""
    w = weight.reshape(groups, weight.shape[0] // groups, -1)
    w = F.pad(w, (0, 0, 0, -w.shape[1] % block))
    return w.reshape(groups, -1, block, w.shape[2]).transpose(2, 3).contiguous()


def channels_last_groups(t: torch.Tensor, groups: int, padded_channels: int) -> torch.Tensor:
    """(N, C, H, W) as (N, H, W, g, Cp): channels-last per group, each group's C / g channels zero-padded to Cp."""
    n, c, h, w = t.shape
    grouped = t.reshape(n, groups, c // groups, h, w).permute(0, 3, 4, 1, 2)
    return F.pad(grouped, (0, padded_channels - c // groups)).contiguous()


def channels_last(t: torch.Tensor, padded_channels: int) -> torch.Tensor:
    """(N, C, H, W) as (N, H, W, Cp), the C channels zero-padded to Cp (one group)."""
    return channels_last_groups(t, 1, padded_channels)[:, :, :, 0]


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


def _geometry(geom: AdderGeometry) -> dict[str, int]:
    (sh, sw), (dh, dw), (ph, pw) = geom.stride, geom.dilation, geom.padding
    return {"SH": sh, "SW": sw, "DH": dh, "DW": dw, "PH": ph, "PW": pw}


def _pad(x: torch.Tensor, geom: AdderGeometry) -> torch.Tensor:
    ph, pw = geom.padding
    return F.pad(x, (pw, pw, ph, ph)).contiguous() if ph or pw else x.contiguous()


def _lanes(lib: ctypes.CDLL, dtype: torch.dtype) -> int:
    return lib.adder_vector_bytes() * 8 // torch.finfo(dtype).bits


def _vector_multiple(channels: int, lanes: int) -> int:
    """``channels`` rounded up to whole vectors: the channels-last layouts' padded channel count."""
    return -(-channels // lanes) * lanes


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu" or x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the native adder backend needs float32/float64 CPU tensors, got {x.dtype} on {x.device}")


class NativeBackend:
    """:class:`~pkkd_lightning.ops.backends.AdderBackend` running the C kernels for ``groups`` groups (``chunk_bytes``
    is unused: nothing proportional to the patch count is ever allocated)."""

    def __init__(self, groups: int = 1) -> None:
        self.groups = groups

    def forward(self, x, weight, geom, chunk_bytes):  # noqa: D102 - see AdderBackend
        _check(x)
        if self._depthwise(weight):
            return self._depthwise_forward(x, weight, geom)
        lib = load_library()
        xp = _pad(x, geom)
        n, c, h, w = xp.shape
        o, _, kh, kw = weight.shape
        lanes, group_filters = _lanes(lib, x.dtype), o // self.groups
        vectors = 1 if group_filters <= lanes else lib.adder_forward_block_vectors()
        packed = pack_filters(weight, self.groups, vectors * lanes)
        # Sx, the min identity's patch sums (the padding is already in xp)
        sx = grouped_window_sums(xp, self.groups, (kh, kw), geom.stride, (0, 0), geom.dilation).flatten(2)
        sf = weight.reshape(o, -1).sum(1).contiguous()
        out_hw = geom.output_size(x.shape[2], x.shape[3])
        out = x.new_empty(n, o, *out_hw)
        dims = {"N": n, "C": c, "H": h, "W": w, "O": o, "G": self.groups, "KH": kh, "KW": kw, "NV": vectors}
        args = _AdderArgs(
            xp.data_ptr(), packed.data_ptr(), None, sx.data_ptr(), sf.data_ptr(), out.data_ptr(),
            **dims, **_geometry(geom), HO=out_hw[0], WO=out_hw[1],
        )  # fmt: skip
        lib.adder_forward(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
        return out

    def backward(self, grad_out, x, weight, geom, chunk_bytes, need_input_grad, need_weight_grad):  # noqa: D102
        _check(x)
        grad_input = grad_weight = None
        if need_input_grad:
            depthwise = self._depthwise(weight)
            grad_input = (self._depthwise_input_grad if depthwise else self._input_grad)(grad_out, x, weight, geom)
        if need_weight_grad:
            grad_weight = adder_weight_grad(grad_out, x, weight, geom, self.groups)
        return grad_input, grad_weight

    def _input_grad(self, grad_out, x, weight, geom):
        if weight.shape[2:] == (1, 1) and geom.padding == (0, 0) and geom.stride != (1, 1):
            return self._strided_pointwise_input_grad(grad_out, x, weight, geom)
        lib = load_library()
        n, c, h, w = x.shape
        o, group_channels, kh, kw = weight.shape
        cp = _vector_multiple(group_channels, _lanes(lib, x.dtype))
        x_last = channels_last_groups(x, self.groups, cp)  # (N, H, W, g, Cp)
        # (g, kh, kw, Og, Cp): the filters of one tap and group, channels innermost
        w_last = F.pad(
            weight.reshape(self.groups, o // self.groups, group_channels, kh, kw), (0, 0, 0, 0, 0, cp - group_channels)
        )
        w_last = w_last.permute(0, 3, 4, 1, 2).contiguous()
        g_last = grad_out.permute(0, 2, 3, 1).contiguous()  # (N, HO, WO, O)
        out = torch.empty_like(x_last)
        dims = {"N": n, "C": c, "O": o, "G": self.groups, "KH": kh, "KW": kw, "XH": h, "XW": w, "CP": cp}
        args = _AdderArgs(
            x_last.data_ptr(), w_last.data_ptr(), g_last.data_ptr(), None, None, out.data_ptr(),
            **dims, **_geometry(geom), HO=grad_out.shape[2], WO=grad_out.shape[3],
        )  # fmt: skip
        lib.adder_input_grad(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
        return out[..., :group_channels].permute(0, 3, 4, 1, 2).reshape(n, c, h, w)

    def _depthwise(self, weight: torch.Tensor) -> bool:
        """One input channel and one filter per group: the channel-vectorised depthwise kernels."""
        return self.groups > 1 and weight.shape[1] == 1 and weight.shape[0] == self.groups

    def _depthwise_forward(self, x, weight, geom):
        lib = load_library()
        (n, c, _, _), (_, _, kh, kw) = x.shape, weight.shape
        cp = _vector_multiple(c, _lanes(lib, x.dtype))
        x_last = channels_last(_pad(x, geom), cp)  # (N, H + 2 ph, W + 2 pw, Cp)
        w_last = channels_last(weight.view(1, c, kh, kw), cp)[0]  # (kh, kw, Cp)
        ho, wo = geom.output_size(x.shape[2], x.shape[3])
        out = x.new_empty(n, ho, wo, cp)
        dims = {"N": n, "C": c, "H": x_last.shape[1], "W": x_last.shape[2], "O": c, "G": c, "KH": kh, "KW": kw}
        args = _AdderArgs(
            x_last.data_ptr(), w_last.data_ptr(), None, None, None, out.data_ptr(),
            **dims, **_geometry(geom), HO=ho, WO=wo, CP=cp,
        )  # fmt: skip
        lib.adder_depthwise_forward(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
        return out[..., :c].permute(0, 3, 1, 2).contiguous()

    def _depthwise_input_grad(self, grad_out, x, weight, geom):
        lib = load_library()
        (n, c, h, w), (_, _, kh, kw) = x.shape, weight.shape
        cp = _vector_multiple(c, _lanes(lib, x.dtype))
        x_last = channels_last(x, cp)  # (N, H, W, Cp)
        w_last = channels_last(weight.view(1, c, kh, kw), cp)[0]  # (kh, kw, Cp)
        g_last = channels_last(grad_out, cp)  # (N, HO, WO, Cp)
        out = torch.empty_like(x_last)
        dims = {"N": n, "C": c, "O": c, "G": c, "KH": kh, "KW": kw, "XH": h, "XW": w, "CP": cp}
        args = _AdderArgs(
            x_last.data_ptr(), w_last.data_ptr(), g_last.data_ptr(), None, None, out.data_ptr(),
            **dims, **_geometry(geom), HO=grad_out.shape[2], WO=grad_out.shape[3],
        )  # fmt: skip
        lib.adder_depthwise_input_grad(ctypes.byref(args), x.dtype == torch.float64, torch.get_num_threads())
        return out[..., :c].permute(0, 3, 1, 2).contiguous()

    def _strided_pointwise_input_grad(self, grad_out, x, weight, geom):
        """A strided 1x1 layer reads one input position in ``sh * sw``; only those get a gradient, that of the
        same layer with stride 1 on them (the channels-last copies then cover the positions read, not all)."""
        (sh, sw), (ho, wo) = geom.stride, grad_out.shape[2:]
        read = (slice(None), slice(None), slice(0, sh * ho, sh), slice(0, sw * wo, sw))
        unit = AdderGeometry((1, 1), (1, 1), (0, 0), geom.dilation)
        grad_input = x.new_zeros(x.shape)
        grad_input[read] = self._input_grad(grad_out, x[read], weight, unit)
        return grad_input

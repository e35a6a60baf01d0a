"""Test-session setup: without a GPU, Triton kernels run in Triton's CPU interpreter so the CPU suite checks them.

This must run before ``pkkd_lightning`` is imported: ``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is
defined. With CUDA present the kernels are compiled and tested on the GPU instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

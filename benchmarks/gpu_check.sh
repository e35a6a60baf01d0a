#!/usr/bin/env bash
# One-call GPU check for the device machine: the CUDA tests of the adder op, the Triton tile sweep, then the op
# and training-step benchmarks on CUDA. Writes logs to $OUT when set. Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
out=${OUT:-/tmp}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 240 python -m pytest -q -p no:cacheprovider tests/ops/test_triton_backend.py \
    "tests/ops/test_adder_backends.py::test_cuda_backend_matches_cpu_reference" \
    tests/ops/test_adder_grouped.py -k cuda 2>&1 | tail -5 | tee "$out/cuda_tests.txt"
timeout 180 python benchmarks/adder_op.py --device cuda --batch 256 --repeats 20 --methods conv2d triton fused \
    --shapes resnet20 small grouped 2>&1 | tee "$out/adder_op_cuda_b256.txt"
timeout 240 python benchmarks/train_step.py --device cuda --batch 256 --repeats 10 --backends triton fused \
    --archs resnet20 timm:resnet10t timm:mobilenetv3_small_050 2>&1 | tee "$out/train_step_cuda.txt"
timeout 60 python benchmarks/train_step.py --device cuda --batch 256 --repeats 10 --bf16 --backends triton 2>&1 \
    | tee "$out/train_step_cuda_bf16.txt"
timeout 180 python benchmarks/triton_tiles.py --batch 256 --repeats 10 2>&1 | tee "$out/triton_tiles_b256.txt"

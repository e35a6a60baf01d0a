#!/usr/bin/env bash
# One-call GPU check for the device machine: CUDA tests of the adder op, then the op and training-step
# benchmarks on CUDA. Writes logs to $OUT when set. Usage: bash benchmarks/gpu_check.sh
set -uo pipefail
out=${OUT:-/tmp}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider tests/ops -k cuda 2>&1 | tail -4 | tee "$out/cuda_tests.txt"
python benchmarks/adder_op.py --device cuda --batch 64 --repeats 20 2>&1 | tee "$out/adder_op_cuda_b64.txt"
python benchmarks/adder_op.py --device cuda --batch 256 --repeats 20 --methods conv2d unfold fused 2>&1 | tee "$out/adder_op_cuda_b256.txt"
python benchmarks/train_step.py --device cuda --batch 256 --repeats 10 2>&1 | tee "$out/train_step_cuda.txt"
python benchmarks/train_step.py --device cuda --batch 256 --repeats 10 --bf16 2>&1 | tee "$out/train_step_cuda_bf16.txt"

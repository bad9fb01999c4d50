#!/usr/bin/env bash
# The project's GPU checks in one run (by hand, on a machine with a CUDA GPU; CI has none):
# the CUDA tests, ResNet-18 training throughput at CIFAR-10 size (float32 and bf16 autocast) and the
# attack/evaluation speed on mnist5k. Results go to $RESULTS (default bench/results/).
#
#     bash bench/gpu_check.sh
set -u
RESULTS=${RESULTS:-bench/results}
PY=${PY:-python3}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$RESULTS/cuda_tests.txt"
for amp in none bf16; do
  $PY bench/bench_resnet.py --device cuda --steps 20 --warmup 5 --reps 3 --amp $amp --out "$RESULTS/resnet_cuda_$amp.json"
done
$PY bench/bench_attacks.py --device cuda --skip-agreement --json "$RESULTS/attacks_cuda.json"

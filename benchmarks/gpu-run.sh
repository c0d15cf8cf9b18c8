#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a lent GPU machine (it has torch and transformers; what it
# lacks travels as wheels in .whl/: transformers==5.23.*, pydantic, pydantic-core, annotated-types,
# typing-inspection). Logs and results go to $OUT when set (the device tool), else benchmarks/results/.
#   bash benchmarks/gpu-run.sh            # GPU oracles (pytest -m gpu), benchmarks/gpu.py, benchmarks/decode.py
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu-device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/fastav/test_gpu.py 2>&1 | tee "$out/gpu-tests.log"
tests=${PIPESTATUS[0]}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
python3 -m benchmarks.gpu --family qwen3_omni qwen3_vl qwen2_5_vl --out "$out/gpu-$gpu.json" 2>&1 | tee "$out/gpu-bench.log"
bench=${PIPESTATUS[0]}
python3 -m benchmarks.decode --out "$out/decode-$gpu.json" 2>&1 | tee "$out/decode-bench.log"
decode=${PIPESTATUS[0]}
echo "gpu tests exit $tests, benchmark exit $bench, decode benchmark exit $decode"
exit $(( tests || bench || decode ))

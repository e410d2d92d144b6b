#!/usr/bin/env bash
# Issue 12, for a machine with one CUDA GPU: the CUDA tests, then S16 / B16 batch-8 throughput and peak
# memory, fp32 against bf16 (and the default autocast). Under 8 minutes on one recent GPU; each step has
# its own time limit so that a hang cannot eat the rest.
#     bash benchmarks/gpu_check.sh            (from a checkout with `pip install -e ".[test]"` done)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
properties = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, {properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PY

echo "== CUDA tests (fp32 parity, bf16 / autocast on the fixture clips, autocast training step)"
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_precision.py -k "cuda or cli or load_model" \
    || status=1

echo "== S16 / B16 at 224, batch 8: median of 10 after 3 warm-up (random weights, fast path)"
for arch in s b; do
    for precision in fp32 bf16 auto; do
        timeout 100 python -m uniformer_cli.cli.app flops --arch "$arch" --frames 16 --size 224 --bench \
            --device cuda --batch-size 8 --warmup 3 --runs 10 --precision "$precision" | sed -n '/Measured/,$p' \
            || status=1
    done
done
exit $status

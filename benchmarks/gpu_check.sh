#!/usr/bin/env bash
# Issues 12 and 22, for a machine with one CUDA GPU, in under 5 minutes: the CUDA tests (fp32 parity with
# the official logits computed on the CPU, bf16 / fp16 autocast keeping the top-5 on real clips, an
# autocast training step), then benchmarks/gpu_check.py: model throughput at batch 1 / 8 / 32 (fp32,
# bf16, default autocast), `uniformer predict` and eval scoring at the same batches, training steps under
# AMP with and without gradient checkpointing, peak memory throughout. Each step has its own time limit
# so that a hang cannot eat the rest.
#     bash benchmarks/gpu_check.sh             (from a checkout with `pip install -e ".[test]"` done)
#     bash benchmarks/gpu_check.sh --dry-run   (any machine: the tests are only collected and every
#                                               measurement runs once on the CPU at a tiny shape)
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=()
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=(--dry-run)
elif [[ $# -gt 0 ]]; then
    echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2
    exit 2
fi
status=0
started=$SECONDS

if [[ ${#dry_run[@]} -eq 0 ]]; then
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch")' \
        || exit 1
    echo "== CUDA tests"
    timeout 150 python -m pytest -q -p no:cacheprovider tests/test_cuda.py || status=1
else
    echo "== CUDA tests (dry run: collected only)"
    timeout 150 python -m pytest -q -p no:cacheprovider --collect-only tests/test_cuda.py > /dev/null || status=1
fi

timeout 240 python benchmarks/gpu_check.py "${dry_run[@]}" || status=1
echo "gpu_check.sh: $((SECONDS - started)) s, exit status $status"
exit $status

"""benchmarks/gpu_check.sh has no GPU to run on in CI: it must at least parse, and its measuring part must
run end to end (on the CPU, tiny shapes: `--dry-run`), so that the first lent GPU gets figures."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_gpu_check_script_parses_and_refuses_unknown_arguments() -> None:
    subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], check=True)
    refused = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage:" in refused.stderr


@pytest.mark.slow
def test_the_gpu_checks_measuring_part_runs_on_the_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for part in ("== model throughput", "== predict", "== eval scoring", "== train steps", "gpu_check.py done"):
        assert part in done.stdout, (part, done.stdout)
    assert "FAILED" not in done.stdout, done.stdout


def _official_v2() -> types.ModuleType:
    """benchmarks/official_v2.py (not a package: loaded from its path)."""
    spec = importlib.util.spec_from_file_location("bench_official_v2", BENCHMARKS / "official_v2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=30, deadline=None)
@given(
    frames=st.integers(1, 64),
    classes=st.integers(1, 1000),
    returns=st.lists(st.integers(0, 23), min_size=1, max_size=6, unique=True),
    lmhra=st.booleans(),
    rate=st.floats(0, 1, allow_nan=False),
    dropouts=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=4),
    reduction=st.none() | st.floats(1, 4, allow_nan=False),
)
def test_official_settings_read_an_experiment_config_as_the_official_wrapper_passes_it(
    frames: int,
    classes: int,
    returns: list[int],
    lmhra: bool,
    rate: float,
    dropouts: list[float],
    reduction: float | None,
) -> None:
    """bench_v2.py --official builds the official model from the checkout's experiment config: each setting
    reaches the builder under its argument name, typed as YAML types it; unset ones take the official
    defaults (DW_REDUCTION 1.5, DOUBLE_LMHRA True, FROZEN False); a config without a needed key is refused."""
    official = _official_v2()
    shrink = "" if reduction is None else f"  DW_REDUCTION: {reduction!r}\n"
    text = (
        "DATA:\n"
        f"  NUM_FRAMES: {frames}\n"
        "  TEST_CROP_SIZE: 224\n"
        "UNIFORMERV2:\n"
        "  BACKBONE: 'uniformerv2_l14'\n"
        f"  N_LAYERS: {len(returns)}\n  N_DIM: 1024\n  N_HEAD: 16\n  MLP_FACTOR: 4.0\n"
        f"  BACKBONE_DROP_PATH_RATE: {rate!r}\n  DROP_PATH_RATE: 0.\n"
        f"  MLP_DROPOUT: [{', '.join(map(repr, dropouts))}]\n  CLS_DROPOUT: 0.5\n"
        f"  RETURN_LIST: [{', '.join(map(str, returns))}]\n"
        f"  NO_LMHRA: {not lmhra}\n  TEMPORAL_DOWNSAMPLE: False\n{shrink}"
        "MODEL:\n"
        f"  NUM_CLASSES: {classes}\n  USE_CHECKPOINT: False\n  CHECKPOINT_NUM: [0]\n"
    )
    builder, found = official.released_settings(text)
    assert builder == "uniformerv2_l14"
    assert found["t_size"] == frames and found["num_classes"] == classes and found["return_list"] == returns
    assert found["n_layers"] == len(returns) and found["n_dim"] == 1024 and found["n_head"] == 16
    assert found["no_lmhra"] is (not lmhra) and found["temporal_downsample"] is False
    assert found["backbone_drop_path_rate"] == rate and found["mlp_dropout"] == dropouts
    assert found["dw_reduction"] == (1.5 if reduction is None else reduction)
    assert found["double_lmhra"] is True and found["frozen"] is False and found["pretrained"] is False
    assert found["use_checkpoint"] is False and found["checkpoint_num"] == [0]
    with pytest.raises(official.OfficialError, match="NUM_CLASSES"):
        official.released_settings(text.replace(f"NUM_CLASSES: {classes}", "NUM_CLASS: 1"))


def test_official_model_refuses_a_folder_that_is_not_the_official_checkout(tmp_path: Path) -> None:
    official = _official_v2()
    with pytest.raises(official.OfficialError, match="not a checkout of OpenGVLab/UniFormerV2"):
        official.official_module(tmp_path)
    (tmp_path / "exp").mkdir()
    with pytest.raises(official.OfficialError, match=re.escape("has no exp/k400/k400_b16_f8x224/config.yaml")):
        official.official_model(tmp_path, official.B16_EXPERIMENT)

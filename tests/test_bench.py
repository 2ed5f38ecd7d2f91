"""bench/gpu.py runs anywhere: --quick prints its table on a CPU, with the twin beside diffusion."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANT_NAMES = ["fp32", "bf16", "bf16 temp", "bf16 sp1", "bf16 no-fut", "bf16 dual", "bf16 dual r4"]


def test_gpu_bench_quick_prints_a_row_per_case_with_every_column():
    record = ROOT / "bench" / "results" / "gpu.json"
    before = record.read_bytes() if record.exists() else None
    out = subprocess.run(
        [sys.executable, "bench/gpu.py", "--quick", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("device: CPU")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["16"]]
    assert [r[1] for r in rows] == ["1", "2"]
    header = out.splitlines()[1]
    assert all(name in header for name in VARIANT_NAMES), header
    for row in rows:
        speeds, share, of_limit, ratio = row[2:-6], float(row[-6]), row[-4], row[-1]
        assert len(speeds) == len(VARIANT_NAMES)
        assert all(float(s) > 0 for s in speeds) and 0 < share <= 1
        assert of_limit.endswith("%") and ratio.endswith("x")
    after = record.read_bytes() if record.exists() else None
    assert after == before, "a quick run is a smoke test: it leaves the GPU record as it was"

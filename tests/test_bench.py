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


def test_ab_prints_every_row_of_the_new_table_with_ratios_where_a_row_matches():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ab", ROOT / "bench" / "ab.py")
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    old = "tokens batch setting tok/s\n64 1 default 100.0\n256 1 default 50.0\nnote: same run"
    new = (
        "tokens batch setting tok/s dtype\n64 1 twin 90.0\n64 1 default 200.0\n64 1 dual 300.0\n"
        "256 1 default 25.0\n256 8 default 10.0\nnote: same run"
    )
    merged = ab.merge(old, new)
    assert len(merged) == len(new.splitlines())
    assert merged[2] == "64 1 default 200.0(2.00)" and merged[4] == "256 1 default 25.0(0.50)"
    assert merged[1] == "64 1 twin 90.0" and merged[3] == "64 1 dual 300.0" and merged[5] == "256 8 default 10.0"
    assert merged[0] == "tokens batch setting tok/s dtype" and merged[-1] == "note: same run"

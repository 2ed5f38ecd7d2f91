"""One rank of a distributed test run, as torchrun starts it: `ranks.py SPEC.json`.

SPEC holds TrainConfig's fields under "config", and optionally "stop_rank" and "stop_after": that
rank alone asks to stop after that many steps (a cancel seen by one rank must stop them all).
A cancelled rank writes `cancelled.RANK` beside the output and exits 3; the rank that asked waits a
second first, so that torchrun does not end the others before they stopped by themselves.
"""

import json
import os
import sys
import time
from pathlib import Path

from diffusion_core.training import TrainConfig, TrainingCancelled, train


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    rank = int(os.environ["RANK"])
    asks = rank == spec.get("stop_rank")
    steps = iter(range(1, 1_000_000))
    try:
        train(config, show_progress=False, should_stop=lambda: asks and next(steps) >= spec["stop_after"])
    except TrainingCancelled:
        Path(config.output).with_name(f"cancelled.{rank}").write_text("")
        time.sleep(1.0 if asks else 0.0)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

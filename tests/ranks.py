"""One rank of a distributed test run, as torchrun starts it: `ranks.py SPEC.json`.

SPEC holds TrainConfig's fields under "config", and optionally "stop_rank" and "stop_after": that
rank alone asks to stop after that many steps (a cancel seen by one rank must stop them all).
Exits 3 when the run was cancelled.
"""

import json
import os
import sys
from pathlib import Path

from diffusion_core.training import TrainConfig, TrainingCancelled, train


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    asks = int(os.environ["RANK"]) == spec.get("stop_rank")
    steps = iter(range(1, 1_000_000))
    try:
        train(config, show_progress=False, should_stop=lambda: asks and next(steps) >= spec["stop_after"])
    except TrainingCancelled:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

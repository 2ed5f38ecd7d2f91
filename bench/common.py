"""What every benchmark shares: the machine it ran on, and a record of what it printed.

`with record("name", "title"):` tees stdout into bench/results/name.json together with the
machine, versions and date; bench/report.py turns those files into docs/results.md.
"""

import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from diffusion_core import assessment

RESULTS = Path(__file__).parent / "results"


def environment() -> dict[str, str]:
    """unmask eval's record of the machine, with the time of day and the kind of device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = assessment.environment(device)
    kind = "GPU" if device.type == "cuda" else f"{env['threads']} threads (CPU)"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": f"{env['hardware']}, {kind}",
        "torch": env["torch"],
        "transformers": env["transformers"],
        "python": env["python"],
    }


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


@contextmanager
def record(name: str, title: str) -> Iterator[None]:
    """Print as usual; on success also keep the output, the command and the machine in results/name.json."""
    buffer = io.StringIO()
    original = sys.stdout
    sys.stdout = _Tee(original, buffer)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = original
    RESULTS.mkdir(exist_ok=True)
    entry = {
        "title": title,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "environment": environment(),
        "output": buffer.getvalue(),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(entry, indent=2) + "\n")

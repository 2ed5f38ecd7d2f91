"""What one /render/gif request costs: resident memory and time, one at a time and three at once.

Every case is a request body under 1 MB built to be expensive in one way (the tallest frame the
schema allows, a tall frame beside many small ones, the most frames, a viewer's ordinary run).
Each runs in a fresh process through the route's own code (the JSON parsed and validated as
FastAPI does, the drawing off the event loop); the process's resident memory before the request
is the baseline of its growth, measured in the same process.

    python bench/render.py                 # every case, one and three at once
    python bench/render.py --case tallest  # one case
"""

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import record

BOUND_MB, BOUND_S, BOUND_THREE_MB = 300, 10.0, 900  # any request under 1 MB; three at once
ROOT = Path(__file__).resolve().parents[1]


def _frame(tokens: list[str], step: int = 0) -> dict[str, Any]:
    n = len(tokens)
    sample = {"tokens": tokens, "masked": [False] * n, "revealed": [False] * n, "fixed": [False] * n,
              "confidence": [None] * n}  # fmt: skip
    return {"step": step, "steps": 1024, "samples": [sample], "timing": {"elapsed_ms": float(step)}}


def _wide(n: int, width: int = 24) -> list[str]:
    return [" " + "W" * (width - 1)] * n  # the widest glyphs: the fewest tokens per line


def _fill(frames: list[dict[str, Any]], make: Any, limit: int = 1_000_000) -> list[dict[str, Any]]:
    """Append frames from make(step) while the body stays under `limit` bytes (and the schema's 1,025 frames)."""
    size = len(json.dumps({"frames": frames}))
    while len(frames) < 1025:
        frame = make(len(frames))
        size += len(json.dumps(frame)) + 2
        if size >= limit:
            break
        frames.append(frame)
    return frames


def cases() -> dict[str, dict[str, Any]]:
    words = [" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", "."]
    return {
        # the audit's request: one 2,048-token frame of 24-character tokens and four small frames
        "audit": {"frames": [_frame(_wide(2048))] + [_frame([" a"], s) for s in range(1, 5)]},
        # one frame as tall as the schema allows (2,048 tokens of 64 wide characters, one per line)
        "tallest": {"frames": [_frame(_wide(2048, 64))]},
        # a frame as tall as a GIF may be, then small frames drawn at its height, as many as may be drawn
        "tall_and_many": {"frames": [_frame(_wide(399))] + [_frame([" a"], s) for s in range(1, 19)]},
        # the most frames, each as long as fits under 1 MB
        "most_frames": {"frames": _fill([], lambda s: _frame(words * 2, s))},
        # a viewer's long run: 256 steps of a 150-token text
        "viewer_run": {"frames": [_frame((words * 15)[: min(150, 8 + s)], s) for s in range(257)]},
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(case: str, copies: int) -> dict[str, Any]:
    """In this process: `copies` requests of `case` at once through the route; memory and time."""
    sys.path.insert(0, str(ROOT))
    from diffusion_core.runtime import keep_freed_memory
    from services.api.errors import ApiError
    from services.api.routes.render import render_gif
    from services.api.schemas import RenderRequest

    keep_freed_memory()  # as the API does
    body = json.dumps(cases()[case]).encode()
    asyncio.run(render_gif(RenderRequest.model_validate(json.loads(json.dumps(_frame_body())))))  # warm the font
    before = _rss_mb()

    async def request() -> int:
        try:  # what FastAPI does with a JSON body: parse, then validate
            response = await render_gif(RenderRequest.model_validate(json.loads(body)))
        except ApiError as exc:
            return exc.status
        return response.status_code

    async def together() -> list[int]:
        return await asyncio.gather(*(request() for _ in range(copies)))

    started = time.perf_counter()
    statuses = asyncio.run(together())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kb": len(body) / 1024, "statuses": statuses, "seconds": seconds, "grew_mb": peak - before,
            "kept_mb": _rss_mb() - before}  # fmt: skip


def _frame_body() -> dict[str, Any]:
    return {"frames": [_frame([" a"])]}


def measure(case: str, copies: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", case, "--copies", str(copies)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(cases()), action="append")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.copies)))
        return
    with record("render", "/render/gif: memory and time per request under 1 MB"):
        print(
            f"bound for any request under 1 MB: +{BOUND_MB} MB and {BOUND_S:.0f} s; three at once +{BOUND_THREE_MB} MB"
        )
        print(f"{'case':<14} {'body KB':>8} {'at once':>7} {'status':>12} {'seconds':>8} {'+MB peak':>9} "
              f"{'+MB after':>9} {'of bound':>8}")  # fmt: skip
        worst = 0.0
        for case in args.case or list(cases()):
            for copies in (1, 3):
                r = measure(case, copies)
                bound = BOUND_MB if copies == 1 else BOUND_THREE_MB
                share = max(r["grew_mb"] / bound, r["seconds"] / (BOUND_S * copies))
                worst = max(worst, share)
                statuses = ",".join(str(s) for s in sorted(set(r["statuses"])))
                print(f"{case:<14} {r['kb']:>8.0f} {copies:>7} {statuses:>12} {r['seconds']:>8.2f} "
                      f"{r['grew_mb']:>9.0f} {r['kept_mb']:>9.0f} {share:>7.0%}")  # fmt: skip
        print(f"worst share of the bound: {worst:.0%} ({'within' if worst <= 1 else 'OVER'} the bound)")


if __name__ == "__main__":
    main()

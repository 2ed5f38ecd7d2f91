"""Serving throughput and latency, continuous batching on vs off, on the same requests in one run.

Starts the API twice (batching on, then off) on a loopback port with the given model, sends
the same requests at concurrency 1, 4 and 16, and prints throughput, p50/p95 latency, their
ratios, and the time to the first denoised WebSocket frame against its forward pass.

    python bench/serve.py                       # the bundled starter model
    python bench/serve.py --model PATH --requests 32
"""

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn
from common import record
from websockets.sync.client import connect

from services.api.config import Settings
from services.api.main import create_app

PARAMS = {"max_new_tokens": 64, "steps": 16, "forbid_eos": True}


def start(model: str, batching: bool) -> tuple[uvicorn.Server, str]:
    settings = Settings(model=model, batching=batching, max_concurrent_requests=16, max_queue=64)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    while httpx.get(base + "/ready").status_code != 200:
        time.sleep(0.1)
    return server, base


def one(base: str, seed: int) -> float:
    t0 = time.perf_counter()
    r = httpx.post(
        base + "/generate",
        json={"inputs": "It was a fine morning, and", "parameters": {**PARAMS, "seed": seed}},
        timeout=600,
    )
    r.raise_for_status()
    return time.perf_counter() - t0


def load(base: str, concurrency: int, requests: int) -> tuple[float, float, float]:
    """(requests per second, p50 s, p95 s)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda s: one(base, s), range(requests)))
    wall = time.perf_counter() - t0
    return requests / wall, statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]


def first_frame(base: str) -> tuple[float, float, float]:
    """(seconds to the step-0 canvas, seconds to the first denoised frame, that frame's forward pass)."""
    with connect(base.replace("http", "ws") + "/ws/generate") as ws:
        t0 = time.perf_counter()
        ws.send(json.dumps({"inputs": "It was a fine morning, and", "parameters": {**PARAMS, "seed": 0}}))
        canvas = json.loads(ws.recv())
        canvas_s = time.perf_counter() - t0
        assert canvas["step"] == 0
        frame = json.loads(ws.recv())
        elapsed = time.perf_counter() - t0
        while json.loads(ws.recv())["type"] == "frame":
            pass
    return canvas_s, elapsed, frame["timing"]["forward_ms"] / 1000


def main() -> None:
    from diffusion_core.starter import STARTER_DIFFUSION

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(STARTER_DIFFUSION))
    parser.add_argument("--requests", type=int, default=32)
    args = parser.parse_args()
    table: dict[tuple[bool, int], tuple[float, float, float]] = {}
    for batching in (True, False):
        server, base = start(args.model, batching)
        one(base, 0)  # warm-up
        for concurrency in (1, 4, 16):
            table[batching, concurrency] = load(base, concurrency, args.requests if concurrency > 1 else 8)
        if batching:
            ttff = [first_frame(base) for _ in range(5)]
        server.should_exit = True
        time.sleep(1)
    print(f"model {args.model}; {PARAMS['max_new_tokens']} new tokens, {PARAMS['steps']} steps per request")
    print(f"{'concurrency':>11} {'batching':>9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}")
    for (batching, c), (rps, p50, p95) in sorted(table.items(), key=lambda kv: (kv[0][1], not kv[0][0])):
        print(f"{c:>11} {'on' if batching else 'off':>9} {rps:>7.2f} {p50:>7.2f} {p95:>7.2f}")
    single = table[True, 1][1]
    print(f"throughput at 16, batching on / off: {table[True, 16][0] / table[False, 16][0]:.2f}x (target >= 1.8x)")
    print(f"p95 at 16 (batching on) / single-request p50: {table[True, 16][2] / single:.2f}x (target <= 2.5x)")
    canvas, first, forward = min(ttff, key=lambda t: t[1])
    print(
        f"time to the step-0 canvas: {canvas * 1000:.0f} ms; to the first denoised frame: {first * 1000:.0f} ms, of"
        f" which its forward pass {forward * 1000:.0f} ms: overhead {(first - forward) * 1000:.0f} ms (target <= 20 ms)"
    )


if __name__ == "__main__":
    with record("serve", "Serving: continuous batching under concurrent load"):
        main()

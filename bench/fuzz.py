"""Hostile traffic against a real `unmask serve`: schemathesis cases over the whole OpenAPI, with the key.

Starts the API (the bundled starter, a private Redis for the job routes) as its own process, sends
property-based requests to every operation, and prints the 5xx answers, the requests that hung,
and the server's resident memory before and after (its growth against the baseline of the same
run).

    python bench/fuzz.py                  # >= 2,000 cases
    python bench/fuzz.py --per-operation 20
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import schemathesis
from common import record
from hypothesis import HealthCheck, given, settings

from services.stack.redis_server import RedisServer, free_port

KEY = "fuzz-key-0123456789abcdef"
SMALL = {"max_new_tokens": 4, "steps": 2}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(state: Path, redis_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "UNMASK_STATE_DIR": str(state), "UNMASK_API_KEY": KEY}
    log = (state / "api.log").open("ab")
    cmd = [sys.executable, "-m", "diffusion_core.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the API did not become ready")


def fuzz(base: str, per_operation: int) -> tuple[int, list[str], list[str], dict[int, int]]:
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    cases, failures, hangs, codes = 0, [], [], {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=per_operation, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            nonlocal cases
            if isinstance(case.body, dict) and isinstance(case.body.get("parameters"), dict):
                case.body["parameters"].update(SMALL)
            cases += 1
            try:
                response = case.call(base_url=base, timeout=60, headers={"Authorization": f"Bearer {KEY}"})
            except httpx.TimeoutException:
                hangs.append(f"{case.method} {case.path}")
                return
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {response.status_code} {response.text[:160]}")

        check()
    return cases, failures, hangs, codes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-operation", type=int, default=80, help="cases per operation (about 28 operations)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis_url:
        server, base = start(Path(tmp), redis_url)
        try:
            for _ in range(3):  # the baseline: memory after a few ordinary requests
                httpx.post(base + "/generate", json={"inputs": "It was", "parameters": SMALL}, timeout=60)
            before = rss_mb(server.pid)
            started = time.monotonic()
            cases, failures, hangs, codes = fuzz(base, args.per_operation)
            seconds = time.monotonic() - started
            time.sleep(1.5)  # the engine returns its peak memory once idle
            after = rss_mb(server.pid)
            alive = httpx.get(base + "/health", timeout=5).status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"{cases} cases in {seconds:.0f} s over every operation, with the key; statuses: {dict(sorted(codes.items()))}"
    )
    print(f"5xx: {len(failures)}; hung (no answer in 60 s): {len(hangs)}; server alive afterwards: {alive}")
    print(f"API resident memory: {before:.0f} MB before, {after:.0f} MB after ({after / before - 1:+.1%})")
    for line in (failures + hangs)[:10]:
        print("  " + line)


if __name__ == "__main__":
    with record("fuzz", "Hostile traffic: schemathesis over the whole API"):
        main()

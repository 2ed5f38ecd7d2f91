import asyncio
import json
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

GEN = {"max_new_tokens": 8, "steps": 4, "seed": 1, "forbid_eos": True}
# 256 forward passes of 8 rows: long enough to still be running when the client leaves.
LONG = {"max_new_tokens": 512, "steps": 256, "block_length": 16, "num_samples": 8, "forbid_eos": True}


def _ws(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/generate"


def test_sse_sends_a_frame_per_step_then_the_result(server):
    with server() as (base, _):
        with httpx.stream(
            "POST", base + "/generate_stream", json={"inputs": "the quick", "parameters": GEN}, timeout=30
        ) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        solo = httpx.post(base + "/generate", json={"inputs": "the quick", "parameters": GEN}, timeout=30).json()
    frames = [e for e in events if e["type"] == "frame"]
    assert [f["step"] for f in frames] == [0, 1, 2, 3, 4] and frames[-1]["done"]
    assert all(frames[0]["samples"][0]["masked"][frames[0]["prompt_length"] :])
    masked = [sum(f["samples"][0]["masked"]) for f in frames]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0
    assert events[-1]["type"] == "done" and events[-1]["results"][0]["generated_text"] == solo["generated_text"]


def test_websocket_streams_frames_with_pieces_and_ends_with_done(server):
    with server() as (base, _):
        with connect(_ws(base)) as ws:
            ws.send(json.dumps({"inputs": "the quick", "parameters": GEN}))
            messages = []
            while True:
                messages.append(json.loads(ws.recv(timeout=30)))
                if messages[-1]["type"] != "frame":
                    break
    frames, done = messages[:-1], messages[-1]
    assert [f["step"] for f in frames] == [0, 1, 2, 3, 4] and done["type"] == "done"
    assert not any(frames[0]["samples"][0]["revealed"]) and frames[0]["timing"]["elapsed_ms"] == 0
    first = frames[1]
    sample = first["samples"][0]
    assert first["prompt_length"] == 3 and "".join(sample["tokens"][:3]) == "the quick"
    assert len(sample["tokens"]) == len(sample["masked"]) == len(sample["confidence"]) == 11
    assert sum(sample["revealed"]) >= 1
    revealed_conf = [c for c, r in zip(sample["confidence"], sample["revealed"]) if r]
    assert all(0 < c <= 1 for c in revealed_conf)
    assert first["timing"]["forward_ms"] > 0


def test_websocket_invalid_request_gets_error_then_policy_close(server):
    with server() as (base, _):
        with connect(_ws(base)) as ws:
            ws.send(json.dumps({"inputs": "x", "parameters": {"steps": 0}}))
            message = json.loads(ws.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
    assert message["type"] == "error" and message["error"]["param"] == "parameters.steps"
    assert closed.value.rcvd.code == 1008


def test_concurrent_requests_share_forward_passes_and_match_their_solo_runs(server):
    params = {"max_new_tokens": 64, "steps": 64, "sampling": "temperature", "forbid_eos": True}
    with server() as (base, app):
        solo = {
            s: httpx.post(
                base + "/generate", json={"inputs": "the", "parameters": {**params, "seed": s}}, timeout=60
            ).json()
            for s in range(4)
        }
        before = app.state.engine.stats.shared_passes
        together: dict[int, dict] = {}

        gate = threading.Barrier(4)  # all four are sent at once; each takes 64 passes

        def call(seed: int) -> None:
            gate.wait()
            together[seed] = httpx.post(
                base + "/generate", json={"inputs": "the", "parameters": {**params, "seed": seed}}, timeout=60
            ).json()

        threads = [threading.Thread(target=call, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        shared = app.state.engine.stats.shared_passes - before
    assert shared > 0, "concurrent requests were never batched"
    for seed in range(4):
        assert together[seed]["generated_text"] == solo[seed]["generated_text"]


def test_full_server_answers_429_and_a_hung_up_client_frees_its_slot(server):
    with server(max_concurrent_requests=1, max_queue=0) as (base, app):
        with connect(_ws(base)) as ws:
            ws.send(json.dumps({"inputs": "the", "parameters": LONG}))
            json.loads(ws.recv(timeout=30))  # running: the only slot is taken
            r = httpx.post(base + "/generate", json={"inputs": "the", "parameters": GEN}, timeout=30)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "overloaded"
        deadline = time.monotonic() + 5
        while app.state.engine.load and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.engine.load == 0
        assert httpx.post(base + "/generate", json={"inputs": "the", "parameters": GEN}, timeout=30).status_code == 200


def test_http_client_that_hangs_up_is_cancelled(server):
    """4096 passes (one token each, the window sliding past the tiny model's 64 positions) outlast the
    client's 0.3 s on any hardware; the server must stop the request soon after the client leaves."""
    endless = {"max_new_tokens": 4096, "steps": 4096, "block_length": 16, "num_samples": 8, "forbid_eos": True}
    with server(max_concurrent_requests=1, max_queue=0, max_new_tokens=4096, max_steps=4096) as (base, app):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/generate", json={"inputs": "the", "parameters": endless}, timeout=0.3)
        deadline = time.monotonic() + 5
        while app.state.engine.load and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.engine.load == 0
        assert app.state.engine.stats.forward_passes < 2048, "the request ran on after its client left"


def test_slow_reader_gets_coalesced_frames_but_always_the_last(tiny_model, tokenizer):
    from diffusion_core import GenerationConfig, create_denoiser
    from services.api.engine import STREAM_BUFFER, Ticket
    from services.api.metrics import Metrics

    total = STREAM_BUFFER + 8

    async def scenario() -> tuple[list[int], int, int]:
        config = GenerationConfig(max_new_tokens=total, steps=total, block_length=0, seed=0, forbid_eos=True)
        state = create_denoiser(tiny_model, tokenizer, "the", config)
        metrics = Metrics()
        ticket = Ticket(state, None, asyncio.get_running_loop(), True, metrics)  # type: ignore[arg-type]
        from diffusion_core.denoise import run

        for frame in run(tiny_model, state):
            ticket.deliver(frame)
        await asyncio.sleep(0.05)

        async def read() -> list[int]:
            return [f.step async for f in ticket.frames()]

        try:  # a stream whose last frame was dropped would never end
            steps = await asyncio.wait_for(read(), 10)
        except TimeoutError:
            raise AssertionError("the stream never ended: its last frame was dropped") from None
        return steps, ticket.dropped, int(metrics.frames_dropped._value.get())

    steps, dropped, counted = asyncio.run(scenario())
    assert steps[-1] == total and len(steps) == STREAM_BUFFER
    assert dropped == counted == total - STREAM_BUFFER


def test_the_autoregressive_stream_says_when_there_is_no_twin_and_names_bad_fields(server, tiny_twin):
    with server() as (base, _):
        with connect(_ws(base).replace("/ws/generate", "/ws/generate_ar")) as ws:
            ws.send(json.dumps({"inputs": "the", "parameters": {"max_new_tokens": 4}}))
            message = json.loads(ws.recv(timeout=30))
        assert message["type"] == "error" and "no autoregressive model" in message["error"]["message"]
    with server(ar_model=str(tiny_twin)) as (base, _):
        with connect(_ws(base).replace("/ws/generate", "/ws/generate_ar")) as ws:
            ws.send(json.dumps({"inputs": "the", "parameters": {"top_p": 2}}))
            message = json.loads(ws.recv(timeout=30))
        assert message["type"] == "error" and message["error"]["param"] == "parameters.top_p"
        with connect(_ws(base).replace("/ws/generate", "/ws/generate_ar")) as ws:
            ws.send(json.dumps({"inputs": "the quick", "parameters": {"max_new_tokens": 5, "seed": 1}}))
            messages = []
            while (m := json.loads(ws.recv(timeout=30)))["type"] == "frame":
                messages.append(m)
        assert [f["step"] for f in messages] == list(range(len(messages))) and 1 < len(messages) <= 6
        assert m["type"] == "done" and m["results"][0]["details"]["nfe"] == messages[-1]["step"]


def test_the_autoregressive_stream_shares_the_engines_capacity(server, tiny_twin):
    with server(ar_model=str(tiny_twin), max_concurrent_requests=1, max_queue=0) as (base, app):
        with connect(_ws(base)) as busy:
            busy.send(json.dumps({"inputs": "the", "parameters": LONG}))
            json.loads(busy.recv(timeout=30))  # running: diffusion holds the only place
            with connect(_ws(base).replace("/ws/generate", "/ws/generate_ar")) as twin:
                twin.send(json.dumps({"inputs": "the", "parameters": {"max_new_tokens": 4}}))
                refused = json.loads(twin.recv(timeout=30))
        assert refused["type"] == "error" and refused["error"]["type"] == "overloaded"
        deadline = time.monotonic() + 10
        while app.state.engine.load and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect(_ws(base).replace("/ws/generate", "/ws/generate_ar")) as twin:
            twin.send(json.dumps({"inputs": "the", "parameters": {"max_new_tokens": 4}}))
            assert json.loads(twin.recv(timeout=30))["type"] == "frame", "once the place is free, it runs"
            while json.loads(twin.recv(timeout=30))["type"] == "frame":
                pass
        deadline = time.monotonic() + 10
        while app.state.engine.load and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.engine.load == 0, "a finished twin run gives its place back"
        with connect(_ws(base)) as after:
            after.send(json.dumps({"inputs": "the", "parameters": {"max_new_tokens": 4, "steps": 2}}))
            assert json.loads(after.recv(timeout=30))["type"] == "frame"


def test_an_sse_client_that_disconnects_mid_stream_frees_its_slot(server):
    endless = {"max_new_tokens": 4096, "steps": 4096, "block_length": 16, "forbid_eos": True}
    with server(max_concurrent_requests=1, max_queue=0, max_new_tokens=4096, max_steps=4096) as (base, app):
        with httpx.stream("POST", base + "/generate_stream", json={"inputs": "the", "parameters": endless}) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data:"))
            assert json.loads(first[len("data:") :])["step"] == 0
        deadline = time.monotonic() + 10
        while app.state.engine.load and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.engine.load == 0, "the stream's request was cancelled when its client left"
        assert app.state.engine.stats.forward_passes < 2048
        assert httpx.post(base + "/generate", json={"inputs": "the", "parameters": GEN}, timeout=30).status_code == 200

"""A bad request or a hostile client must not take the service down, leak what it should not, or hang it."""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from services.api.config import Settings
from tests.conftest import wait_ready

KEY = "k" * 32


def _frame(tokens: list[str], step: int = 0) -> dict:
    n = len(tokens)
    sample = {"tokens": tokens, "masked": [False] * n, "revealed": [False] * n, "fixed": [False] * n,
              "confidence": [None] * n}  # fmt: skip
    return {"step": step, "steps": 40, "samples": [sample], "timing": {"elapsed_ms": 0.0}}


def test_a_gif_that_would_need_gigabytes_is_refused_before_drawing(make_client):
    tall = _frame(["x" * 64] * 300)  # one frame of 300 lines: every frame is drawn at its height
    body = {"frames": [tall] + [_frame(["a", "b"], s) for s in range(1, 40)]}
    with make_client(max_upload_bytes=32 * 1024 * 1024) as client:
        started = time.monotonic()
        r = client.post("/render/gif", json=body)
        assert r.status_code == 413 and "160,000,000" in r.json()["error"]["message"]
        assert time.monotonic() - started < 10
        taller = client.post("/render/gif", json={"frames": [_frame(["x" * 64] * 401)]})
        assert taller.status_code == 413 and "401 lines" in taller.json()["error"]["message"]
        assert client.post("/render/html", json={"frames": [_frame(["x" * 64] * 401)]}).status_code == 200
        too_many = client.post("/render/gif", json={"frames": [_frame(["a"], s) for s in range(1026)]})
        assert too_many.status_code == 422 and too_many.json()["error"]["param"] == "frames"
        long_token = client.post("/render/gif", json={"frames": [_frame(["x" * 65])]})
        assert long_token.status_code == 422 and "frames.0.samples.0.tokens.0" in long_token.json()["error"]["param"]
        assert client.post("/render/gif", json={"frames": [_frame(["fine"]) for _ in range(3)]}).status_code == 200


def test_the_exported_page_escapes_every_field(client):
    hostile = "<img src=x onerror=alert(1)>"
    r = client.post("/render/html", json={"frames": [_frame(["a", hostile])], "title": "__FRAMES__ </title><b>"})
    page = r.text
    assert r.status_code == 200 and "<img" not in page and "<b>" not in page
    assert "<title>__FRAMES__ &lt;/title&gt;&lt;b&gt;</title>" in page  # the title stays text
    frames = json.loads(page.split("const FRAMES = ", 1)[1].split(";\n", 1)[0])
    assert frames[0]["samples"][0]["tokens"][1] == hostile  # the token itself survives, as data


def _ws_url(base: str, path: str = "/ws/generate") -> str:
    return base.replace("http://", "ws://") + path


def test_websockets_refuse_binary_messages_silence_and_foreign_pages(server):
    with server(ws_request_timeout_s=0.5, allowed_origins="https://app.example") as (base, _):
        host = base.removeprefix("http://")
        with connect(_ws_url(base)) as ws:
            ws.send(b"\x00\x01binary")
            message = json.loads(ws.recv(timeout=10))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1008
        assert message["type"] == "error" and "text message" in message["error"]["message"]
        with connect(_ws_url(base)) as ws:  # says nothing
            message = json.loads(ws.recv(timeout=10))
        assert message["error"]["type"] == "timeout"
        for path in ("/ws/generate", "/ws/generate_ar"):
            with pytest.raises(InvalidStatus) as refused:
                connect(_ws_url(base, path), origin="https://evil.example")
            assert refused.value.response.status_code == 403
        request = json.dumps({"inputs": "the", "parameters": {"max_new_tokens": 2, "steps": 1}})
        for origin in (f"http://{host}", "https://app.example"):  # the viewer's own page; a listed origin
            with connect(_ws_url(base), origin=origin) as ws:
                ws.send(request)
                assert json.loads(ws.recv(timeout=30))["type"] == "frame"


def _asgi_post(app, path: str, headers: dict[str, str], chunks: int, chunk: bytes) -> tuple[int, int]:
    """POST a streamed body straight into the app; (status, body chunks the app pulled)."""
    pulled, status = 0, 0

    async def receive() -> dict:
        nonlocal pulled
        if pulled >= chunks:
            await asyncio.sleep(3600)
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return status, pulled


def test_bodies_are_bounded_as_they_arrive_and_a_write_without_the_key_reads_none(make_client):
    with make_client(api_key=KEY) as client:
        app = client.app
        chunked = {"content-type": "application/json", "transfer-encoding": "chunked"}
        status, pulled = _asgi_post(app, "/generate", chunked, chunks=1600, chunk=b" " * 65536)  # 100 MB
        assert status == 413 and pulled <= 3, "reading stopped at the 64 KiB limit"
        declared = {"content-type": "application/json", "content-length": str(100 * 1024 * 1024)}
        status, pulled = _asgi_post(app, "/generate", declared, chunks=1600, chunk=b" " * 65536)
        assert status == 413 and pulled == 0, "a declared size over the limit is refused before reading"
        upload = {"content-type": "multipart/form-data; boundary=x"}
        status, pulled = _asgi_post(app, "/v1/files", upload, chunks=3200, chunk=b"a" * 65536)  # 200 MB, no key
        assert status == 401 and pulled == 0
        r = client.post(
            "/generate", content=iter([b'{"inputs": "the"', b"}"]), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, "a small chunked body still works"


def test_strict_types_and_method_errors(client):
    r = client.post("/generate", json={"inputs": "the", "parameters": {"details": 0}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "parameters.details"
    r = client.post("/render/gif", json={"frames": [_frame(["a"])], "sample": False})
    assert r.status_code == 422 and r.json()["error"]["param"] == "sample"
    r = client.put("/generate", json={})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.get("/generate")  # a read of an API path is not the viewer's missing file
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["type"] == "invalid_request"
    r = client.options("/v1/files")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert client.get("/").status_code == 200 and client.get("/no-such-page").status_code == 404
    spec = client.get("/openapi.json").json()["paths"]
    assert {"413", "422", "429", "503"} <= set(spec["/generate"]["post"]["responses"])
    assert "text/event-stream" in spec["/generate_stream"]["post"]["responses"]["200"]["content"]
    assert any(t.startswith("text/plain") for t in spec["/metrics"]["get"]["responses"]["200"]["content"])


def test_metrics_show_the_memory_in_use(client):
    """The resident memory /metrics reports is this process's, as the kernel counts it."""
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith("process_resident_memory")]
    reported = float(lines[0].split()[-1])
    status = open("/proc/self/status").read().splitlines()
    actual = int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024
    assert 0.8 * actual < reported < 1.25 * actual, (reported, actual)


def test_the_placeholder_key_and_short_keys_are_refused_in_one_line(tmp_path):
    for key in ("change-me-to-a-long-random-string", "short"):
        with pytest.raises(ValueError, match="placeholder|16 characters"):
            Settings(api_key=key)
    env = {**os.environ, "UNMASK_API_KEY": "change-me-to-a-long-random-string"}
    done = subprocess.run(
        [sys.executable, "-m", "diffusion_core.cli", "serve", "--port", "1"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "unmask: error: UNMASK_API_KEY is the placeholder from .env.example; set a long random key (or leave it unset "
        "under `up`)"
    ]


def test_callers_never_see_the_state_folder(make_client, tmp_path):
    state = tmp_path / "private-state"
    missing = state / "checkpoints" / "gone"
    with make_client(model=str(missing), state_dir=state) as client:
        deadline = time.monotonic() + 30
        while (r := client.get("/ready")).status_code == 503 and "loading" in r.text and time.monotonic() < deadline:
            time.sleep(0.05)
        message = r.json()["error"]["message"]
        assert r.status_code == 503 and str(tmp_path) not in message and "<state>" in message


def test_models_say_when_the_list_is_partial(make_client):
    from services.stack.redis_server import free_port

    with make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0") as client:
        wait_ready(client)
        body = client.get("/v1/models").json()
        assert body["partial"] is True and body["data"][0]["id"]


def test_info_lists_every_limit_the_server_enforces(make_client):
    """The values, not only the names: a server started with other limits reports those."""
    chosen = {"max_payload_bytes": 5000, "max_upload_bytes": 70_000, "job_timeout_s": 120, "max_queue": 3}
    with make_client(ws_request_timeout_s=2.5, **chosen) as client:
        limits = client.get("/info").json()["limits"]
    assert {name: limits[name] for name in chosen} == chosen and limits["ws_request_timeout_s"] == 2.5


def test_a_body_exactly_at_the_limit_is_read_and_one_byte_more_is_413(make_client):
    with make_client(max_payload_bytes=2048) as client:
        body = '{"inputs": "the", "parameters": {"max_new_tokens": 2, "steps": 1}}'
        at_limit = body + " " * (2048 - len(body))
        headers = {"content-type": "application/json"}
        assert client.post("/generate", content=at_limit, headers=headers).status_code == 200
        over = client.post("/generate", content=at_limit + " ", headers=headers)
        assert over.status_code == 413 and "2048" in over.json()["error"]["message"]


def test_a_rebound_host_name_is_refused_on_http_and_websockets(make_client):
    """DNS rebinding: a page on evil.example pointed at this machine names its own host; a server on a
    loopback address answers only to loopback names, unless the operator lists more."""
    from starlette.websockets import WebSocketDisconnect

    evil = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    with make_client() as client:
        refused = client.get("/info", headers=evil)
        assert refused.status_code == 400 and "UNMASK_ALLOWED_HOSTS" in refused.json()["error"]["message"]
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/ws/generate", headers=evil) as ws:
                ws.send_json({"inputs": "the", "parameters": {"max_new_tokens": 4, "steps": 2}})
                ws.receive_json()
        for rebound in ("127.0.0.1.evil.example", "localhost.evil.example:8000", "localhostx"):
            assert client.get("/info", headers={"Host": rebound}).status_code == 400, rebound
        assert client.get("/info", headers={"Host": "localhost:8000"}).status_code == 200
        assert client.get("/info", headers={"Host": "[::1]:8000"}).status_code == 200
    with make_client(allowed_hosts="unmask.example,127.0.0.1") as client:
        assert client.get("/info", headers={"Host": "unmask.example"}).status_code == 200
        assert client.get("/info", headers={"Host": "localhost"}).status_code == 400
    with make_client(host="0.0.0.0") as client:
        assert client.get("/info", headers=evil).status_code == 200, "on a public address the key guards it"


def test_a_refused_body_closes_the_connection_and_logs_nothing(server):
    """The 413 and 401 answers say `Connection: close` and the server hangs up, so a client stops
    sending what will never be read, and bytes sent after the refusal are no one's protocol error."""
    import logging
    import socket

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    with server(max_payload_bytes=4096, api_key=KEY) as (base, _):
        for name in ("uvicorn", "asyncio"):  # after uvicorn configured its logging
            logging.getLogger(name).addHandler(handler)
        port = int(base.rsplit(":", 1)[1])
        for path, first in (("/generate", b"2000\r\n" + b" " * 8192 + b"\r\n"), ("/v1/files", b"")):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + first)
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += sock.recv(65536)
                status, headers = answer.split(b"\r\n", 1)
                assert status.split()[1] in (b"413", b"401") and b"connection: close" in headers.lower()
                try:  # bytes after the refusal: a malformed chunk
                    sock.sendall(b"zz-not-a-chunk\r\n" * 64)
                    while sock.recv(65536):
                        pass
                except ConnectionResetError:
                    pass  # hung up: what the client should see
        time.sleep(0.3)
        for name in ("uvicorn", "asyncio"):
            logging.getLogger(name).removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


def test_a_client_that_never_finishes_its_headers_is_hung_up_on(server):
    """Slow-loris: connections that trickle a request head hold no socket past UNMASK_HEADER_TIMEOUT_S;
    a whole request, and the next one on the same connection, are not affected."""
    import socket

    with server(header_timeout_s=1.0) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as kept:
            for _ in range(2):  # keep-alive: a second request on the connection gets its own deadline
                kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while b'"ok"' not in answer:
                    answer += kept.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200")
                time.sleep(0.6)
        started = time.monotonic()
        for sock in slow:
            assert sock.recv(65536) == b"", "closed, with no answer"
            sock.close()
        assert time.monotonic() - started < 3

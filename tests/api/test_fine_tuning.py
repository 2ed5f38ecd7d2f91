"""Files, fine-tune jobs and checkpoints through the API, with a real Redis (no worker: see test_worker)."""

import json

import pytest
from redis import Redis
from rq.job import Job

from diffusion_core import jobs

KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = b"the quick brown fox jumps over the lazy dog.\n\na journey of a thousand miles begins with a step.\n"


@pytest.fixture
def ft_client(make_client, redis_url, tmp_path):
    with make_client(redis_url=redis_url, state_dir=tmp_path / "state", api_key=KEY) as client:
        yield client


def upload(client, content=TEXT, name="data.txt", purpose="fine-tune", headers=AUTH):
    return client.post("/v1/files", files={"file": (name, content)}, data={"purpose": purpose}, headers=headers)


def test_upload_list_get_and_delete_a_training_file(ft_client):
    created = upload(ft_client)
    assert created.status_code == 200, created.text
    file = created.json()
    assert file["object"] == "file" and file["purpose"] == "fine-tune" and file["bytes"] == len(TEXT)
    assert file["id"].startswith("file-") and file["filename"] == "data.txt"
    assert ft_client.get("/v1/files").json()["data"] == [file]
    assert ft_client.get(f"/v1/files/{file['id']}").json() == file
    assert ft_client.delete(f"/v1/files/{file['id']}").status_code == 401
    assert ft_client.delete(f"/v1/files/{file['id']}", headers=AUTH).json()["deleted"] is True
    assert ft_client.get(f"/v1/files/{file['id']}").status_code == 404


@pytest.mark.parametrize(
    ("name", "content", "purpose", "status", "words"),
    [
        ("empty.txt", b"", "fine-tune", 422, "no text"),
        ("blob.txt", bytes(range(256)), "fine-tune", 422, "not UTF-8"),
        ("nul.txt", b"text\x00more", "fine-tune", 422, "binary"),
        ("data.csv", b"a,b\n", "fine-tune", 422, "unsupported file type"),
        ("rows.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', "fine-tune", 422, "rows.jsonl:2"),
        ("deep.jsonl", b'{"text": "ok"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "fine-tune", 422, "deep.jsonl:2"),
        ("data.txt", TEXT, "assistants", 422, "purpose"),
    ],
)
def test_bad_uploads_are_refused_with_the_problem_named(ft_client, name, content, purpose, status, words):
    response = upload(ft_client, content, name, purpose)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]
    assert ft_client.get("/v1/files").json()["data"] == []


def test_uploads_need_the_key_and_respect_the_size_limit(make_client, redis_url, tmp_path):
    with make_client(redis_url=redis_url, state_dir=tmp_path, api_key=KEY, max_upload_bytes=2048) as client:
        assert upload(client, headers={}).status_code == 401
        too_big = upload(client, b"word " * 1000)
        assert too_big.status_code == 413 and "2048" in too_big.json()["error"]["message"]
        assert client.get("/v1/files").json()["data"] == []


def test_a_job_is_recorded_and_enqueued_with_explicit_ttls(ft_client, redis_url):
    file_id = upload(ft_client).json()["id"]
    body = {"model": "tiny", "training_file": file_id, "hyperparameters": {"max_steps": 5}, "suffix": "fox"}
    response = ft_client.post("/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued" and job["training_file"] == file_id
    assert job["hyperparameters"]["max_steps"] == 5 and job["hyperparameters"]["batch_size"] == 16
    assert job["hyperparameters"]["levels"] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "what it trains on"
    assert ft_client.get(f"/v1/fine_tuning/jobs/{job['id']}").json() == job
    assert [j["id"] for j in ft_client.get("/v1/fine_tuning/jobs").json()["data"]] == [job["id"]]
    rq_job = Job.fetch(job["id"], connection=Redis.from_url(redis_url), serializer=jobs.SERIALIZER)
    assert rq_job.get_status() == "queued" and rq_job.func_name == jobs.TASK
    assert rq_job.timeout == 24 * 3600 and rq_job.result_ttl > 0 and rq_job.failure_ttl > 0
    messages = [e["message"] for e in ft_client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]]
    assert messages[0] == "Job enqueued; waiting for a worker"


def test_inline_training_texts_become_a_file(ft_client):
    body = {"model": "tiny", "training_texts": ["one small text.", "and another one."]}
    job = ft_client.post("/v1/fine_tuning/jobs", json=body, headers=AUTH).json()
    file = ft_client.get(f"/v1/files/{job['training_file']}").json()
    assert file["documents"] == 2 and file["filename"] == "training_texts.jsonl"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "tiny"}, 422, "training_file"),
        ({"model": "tiny", "training_file": "file-" + "0" * 24}, 404, "training_file"),
        ({"model": "../../etc/passwd", "training_texts": ["x y z"]}, 404, "model"),
        ({"model": "gpt-4o", "training_texts": ["x y z"]}, 404, "model"),
        (
            {"model": "tiny", "training_texts": ["x"], "hyperparameters": {"n_epochs": 0}},
            422,
            "hyperparameters.n_epochs",
        ),
        (
            {"model": "tiny", "training_texts": ["x"], "hyperparameters": {"learning_rate": 5}},
            422,
            "hyperparameters.learning_rate",
        ),
        (
            {"model": "tiny", "training_texts": ["x"], "hyperparameters": {"levels": [1.5]}},
            422,
            "hyperparameters.levels.0",
        ),
        (
            {"model": "tiny", "training_texts": ["x"], "hyperparameters": {"levels": [1e-320]}},
            422,
            "hyperparameters.levels.0",
        ),
        (
            {"model": "tiny", "training_texts": ["x"], "hyperparameters": {"dropout": 0.1}},
            422,
            "hyperparameters.dropout",
        ),
        ({"model": "tiny", "training_texts": ["x"], "suffix": "../up"}, 422, "suffix"),
        ({"model": "tiny", "training_texts": ["x"], "metadata": {"note": "x" * 513}}, 422, "metadata.note"),
        ({"model": "tiny", "training_texts": [" "]}, 422, "training_texts"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(ft_client, body, status, param):
    """Unknown things (a model, a file) are 404; a bad field is 422 naming it (docs/api.md's table)."""
    response = ft_client.post("/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
    assert ft_client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_creating_a_job_needs_the_key(ft_client):
    response = ft_client.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_texts": ["x y"]})
    assert response.status_code == 401


def test_a_queued_job_is_cancelled_at_once(ft_client, redis_url):
    job = ft_client.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_texts": ["a b c"]}, headers=AUTH)
    job_id = job.json()["id"]
    cancelled = ft_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=AUTH).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert (
        Job.fetch(job_id, connection=Redis.from_url(redis_url), serializer=jobs.SERIALIZER).get_status() == "canceled"
    )
    again = ft_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=AUTH)
    assert again.status_code == 409


def test_the_stream_ends_with_the_final_job_object(ft_client):
    job_id = ft_client.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny", "training_texts": ["a b c"]}, headers=AUTH
    ).json()["id"]
    ft_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=AUTH)
    with ft_client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/stream") as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    last = json.loads(lines[-1][6:])
    assert last["status"] == "cancelled"
    assert any("cancelled" in json.loads(line[6:]).get("message", "") for line in lines)


def test_without_redis_job_routes_say_why_and_generation_works(client):
    response = client.get("/v1/fine_tuning/jobs")
    assert response.status_code == 503 and "REDIS_URL" in response.json()["error"]["message"]
    assert client.post("/generate", json={"inputs": "the", "parameters": {"max_new_tokens": 4}}).status_code == 200


def test_a_validation_file_is_recorded_and_an_unknown_one_is_refused(ft_client):
    training, validation = upload(ft_client).json(), upload(ft_client, name="held-out.txt").json()
    body = {"model": "tiny", "training_file": training["id"], "validation_file": validation["id"]}
    job = ft_client.post("/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert job.status_code == 200 and job.json()["validation_file"] == validation["id"]
    missing = ft_client.post("/v1/fine_tuning/jobs", json={**body, "validation_file": "file-" + "0" * 24}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "validation_file"


def test_events_page_towards_older_ones_with_after(ft_client):
    job = ft_client.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_texts": ["a b c"]}, headers=AUTH)
    job_id = job.json()["id"]
    ft_client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=AUTH)
    every = ft_client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    assert len(every) >= 2
    pages, after = [], None
    while True:
        params = {"limit": 1, **({"after": after} if after else {})}
        page = ft_client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
        pages += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert [e["id"] for e in pages] == [e["id"] for e in every], "one at a time, newest first, none twice"
    unknown = ft_client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"after": "ftevent-nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "after"

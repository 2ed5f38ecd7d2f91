"""Property-based requests generated from /openapi.json: nothing may answer with a 5xx."""

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 50
SMALL = {"max_new_tokens": 4, "steps": 2}


KEY = "schemathesis-key-0123456789"


def test_no_operation_answers_5xx(server, redis_url, tmp_path):
    """With the key, so the write routes run too (bench/fuzz.py runs the longer version)."""
    with server(redis_url=redis_url, state_dir=tmp_path, api_key=KEY) as (base, _):
        schema = schemathesis.openapi.from_url(base + "/openapi.json")
        failures, codes = [], []
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=operation.as_strategy())
            def check(case) -> None:
                if isinstance(case.body, dict) and isinstance(case.body.get("parameters"), dict):
                    case.body["parameters"].update(SMALL)  # keep generation cheap; every other field stays random
                response = case.call(base_url=base, timeout=30, headers={"Authorization": f"Bearer {KEY}"})
                codes.append((case.path, response.status_code))
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text[:200]}"
                    )

            check()
        assert httpx.get(base + "/health").status_code == 200
    assert not failures, "\n".join(failures[:5])
    assert len(codes) >= 300
    assert ("/generate", 200) in codes, "random requests never reached the model"

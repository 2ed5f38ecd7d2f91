"""Settings every service reads alike: compose's empty variables count as unset, for each program."""

from services.api.config import Settings
from services.stack.config import StackSettings
from services.trainer.config import WorkerSettings


def test_an_empty_variable_counts_as_unset_for_every_program(monkeypatch, tmp_path):
    for name in ("UNMASK_MODEL", "UNMASK_AR_MODEL", "REDIS_URL", "UNMASK_DEVICE"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("UNMASK_STATE_DIR", str(tmp_path))
    api, worker, stack = Settings(), WorkerSettings(), StackSettings()
    assert (api.model, api.ar_model, api.redis_url, api.device) == (None, None, None, "auto")
    assert worker.redis_url == "redis://127.0.0.1:6379/0" and stack.redis_url is None
    assert api.state_dir == worker.state_dir == stack.state_dir == tmp_path, "one definition, read alike"

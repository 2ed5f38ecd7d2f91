"""Worker settings, read from the environment (UNMASK_*, REDIS_URL) in the process that needs them."""

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNMASK_", frozen=True, extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "UNMASK_REDIS_URL"),
        description="the Redis that holds the queue, job records and the current-version pointer",
    )
    state_dir: Path = Field(Path(".unmask"), description="shared store: uploaded files and checkpoints")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    keep_versions: int = Field(3, ge=1, description="published checkpoint versions kept (the current one always)")
    snapshot_every: int = Field(200, ge=1, description="steps between resumable snapshots of a running job")
    heartbeat_ttl_s: int = Field(30, ge=2, description="a job whose worker is silent this long is failed as abandoned")

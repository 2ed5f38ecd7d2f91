"""Worker settings, read from the environment (UNMASK_*, REDIS_URL) in the process that needs them."""

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from services.settings import ServiceSettings


class WorkerSettings(ServiceSettings):
    """The worker's settings; the shared ones are in ServiceSettings (here Redis has a default)."""

    model_config = SettingsConfigDict(extra="ignore")

    # The worker always needs a Redis: a default instead of none.
    redis_url: str = Field(  # type: ignore[assignment]
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "UNMASK_REDIS_URL"),
        description="the Redis that holds the queue, job records and the current-version pointer",
    )
    keep_versions: int = Field(3, ge=1, description="published checkpoint versions kept (the current one always)")
    snapshot_every: int = Field(200, ge=1, description="steps between resumable snapshots of a running job")
    heartbeat_ttl_s: int = Field(30, ge=2, description="a job whose worker is silent this long is failed as abandoned")

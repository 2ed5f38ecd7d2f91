"""Settings of `unmask up`, read from UNMASK_* variables and REDIS_URL."""

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.settings import ApiKey


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNMASK_", frozen=True, extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="where the API listens")
    port: int = Field(8000, ge=1, le=65535, description="the API's port (the web viewer is at /)")
    api_key: ApiKey = Field(None, description="bearer key for write routes; none: one is generated")
    state_dir: Path = Field(Path(".unmask"), description="Redis data, uploaded files, checkpoints, the generated key")
    model: str | None = Field(None, description="checkpoint directory or hub id; default: the bundled starter")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "UNMASK_REDIS_URL"),
        description="an existing Redis; none: a private redis-server with its data in the state folder",
    )
    workers: int = Field(1, ge=0, le=16, description="training workers to start")

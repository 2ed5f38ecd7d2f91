"""Settings of `unmask up`, read from UNMASK_* variables and REDIS_URL."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.settings import ApiKey, ServiceSettings


class StackSettings(ServiceSettings):
    """`unmask up`'s settings; the shared ones are in ServiceSettings (no redis_url: a private Redis)."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = Field("127.0.0.1", description="where the API listens")
    port: int = Field(8000, ge=1, le=65535, description="the API's port (the web viewer is at /)")
    api_key: ApiKey = Field(None, description="bearer key for write routes; none: one is generated")
    workers: int = Field(1, ge=0, le=16, description="training workers to start")

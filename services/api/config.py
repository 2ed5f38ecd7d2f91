"""Service settings, read from UNMASK_-prefixed environment variables once, at startup."""

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNMASK_", frozen=True)

    model: str | None = Field(None, description="checkpoint directory or hub id; default: the bundled starter")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    api_key: str | None = Field(None, description="bearer key for write routes; none: write routes refuse every call")
    max_input_tokens: int = Field(256, ge=1, description="longest prompt, in tokens")
    max_new_tokens: int = Field(512, ge=1, description="most tokens one request may generate")
    max_steps: int = Field(256, ge=1, description="most denoising steps one request may ask for")
    max_samples: int = Field(8, ge=1, description="most samples (num_samples / n) per request")
    max_concurrent_requests: int = Field(16, ge=1, description="requests denoised together in the running batch")
    max_queue: int = Field(32, ge=0, description="requests waiting for a slot; beyond it: 429")
    max_payload_bytes: int = Field(64 * 1024, ge=1024, description="largest request body")
    batching: bool = Field(True, description="share forward passes between requests (off: one request at a time)")
    autocast: bool = Field(False, description="bf16 autocast for forward passes")

    @model_validator(mode="after")
    def _limits_fit(self) -> "Settings":
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("UNMASK_API_KEY must be at least 16 characters")
        return self

"""Service settings, read from UNMASK_-prefixed environment variables once, at startup."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.settings import ApiKey, ServiceSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class Settings(ServiceSettings):
    """The API's settings (`unmask serve`); the shared ones are in ServiceSettings."""

    host: str = Field("127.0.0.1", description="where `unmask serve` listens")
    port: int = Field(8000, ge=1, le=65535, description="the port `unmask serve` listens on")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weights of the served models: auto = bfloat16 where the device computes it natively (a GPU, or a"
        " CPU with AVX512-BF16 or AMX), float32 elsewhere",
    )
    api_key: ApiKey = Field(None, description="bearer key for write routes; none: write routes refuse every call")
    max_input_tokens: int = Field(256, ge=1, description="longest prompt, in tokens")
    max_new_tokens: int = Field(512, ge=1, description="most tokens one request may generate")
    max_steps: int = Field(256, ge=1, description="most denoising steps one request may ask for")
    max_samples: int = Field(8, ge=1, description="most samples (num_samples / n) per request")
    max_concurrent_requests: int = Field(16, ge=1, description="requests denoised together in the running batch")
    max_queue: int = Field(32, ge=0, description="requests waiting for a slot; beyond it: 429")
    max_payload_bytes: int = Field(64 * 1024, ge=1024, description="largest request body")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (comma-separated, e.g. https://app.example) besides this server's own that may "
        "open generation WebSockets; * allows any",
    )
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="host names the server answers to (comma-separated; * for any); default: loopback names when it "
        "listens on a loopback address (a page elsewhere cannot reach it by rebinding its DNS), any otherwise",
    )
    ws_request_timeout_s: float = Field(
        10.0, gt=0, description="a generation socket that sends no request by then is closed"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection whose request line and headers are not all in by then is closed"
    )
    batching: bool = Field(True, description="share forward passes between requests (off: one request at a time)")
    autocast: bool = Field(False, description="bf16 autocast for forward passes")
    ar_model: str | None = Field(
        None, description="causal LM shown beside diffusion in the viewer; default: the starter's twin with the starter"
    )
    web_dir: Path | None = Field(None, description="the viewer's static files; default: web/ in the source tree")
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest training file or inline job body")
    max_job_devices: int = Field(8, ge=1, description="most devices one fine-tune job may ask for (n_devices)")
    job_timeout_s: int = Field(24 * 3600, ge=60, description="a fine-tune job running longer is stopped and failed")
    reload_poll_s: float = Field(1.0, gt=0, description="how often the current-version pointer is checked")
    max_loaded_models: int = Field(2, ge=1, description="checkpoint versions held in memory (the current included)")

    def hosts(self) -> list[str]:
        """The Host names this server answers to, lower case ("*": any)."""
        if self.allowed_hosts is not None:
            return [h.lower() for h in self.allowed_hosts]
        return list(LOOPBACK_NAMES) if self.host.lower() in LOOPBACK_NAMES else ["*"]

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

"""What every service's settings share: the common fields, the API key rule, the one-line message for a
bad variable, the check that a port is free."""

import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffusion_core.errors import ConfigError

MIN_KEY_LENGTH = 16
PLACEHOLDER_KEYS = frozenset({"change-me-to-a-long-random-string"})  # .env.example's; publicly known


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if key in PLACEHOLDER_KEYS:
        raise ValueError("is the placeholder from .env.example; set a long random key (or leave it unset under `up`)")
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters")
    return key


ApiKey = Annotated[str | None, AfterValidator(_check_key)]


class ServiceSettings(BaseSettings):
    """UNMASK_* variables (and REDIS_URL) that the API, the worker and `unmask up` all read, once, at start.

    An empty variable counts as unset: compose passes unset variables as empty strings."""

    model_config = SettingsConfigDict(env_prefix="UNMASK_", frozen=True, populate_by_name=True, env_ignore_empty=True)

    state_dir: Path = Field(Path(".unmask"), description="the shared store: uploaded files and checkpoints")
    model: str | None = Field(None, description="checkpoint directory or hub id; default: the bundled starter")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "UNMASK_REDIS_URL"),
        description="the Redis for jobs, the current-version pointer and events",
    )


def shown_url(url: str) -> str:
    """A Redis URL fit for a log or an error message: any password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def settings_error(exc: ValidationError) -> ConfigError:
    """The first problem with the settings as one line naming the variable."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    return ConfigError(f"UNMASK_{str(first['loc'][0]).upper()} {message}")


def check_port(host: str, port: int) -> None:
    """A clear error, before anything starts, when the API's port is taken (`serve` and `up` both ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"port {port} on {host} is busy; set --port or UNMASK_PORT", "port") from None

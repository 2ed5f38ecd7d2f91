"""What every service's settings share: the API key rule and the one-line message for a bad variable."""

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, ValidationError

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

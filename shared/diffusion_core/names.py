"""Named choices (schedules, samplers, remasking rules) looked up with a clear error."""

from typing import TypeVar

from .errors import ConfigError

T = TypeVar("T")


def lookup(table: dict[str, T], name: str, what: str, param: str | None = None) -> T:
    """Return table[name]; an unknown name raises ConfigError listing the known ones."""
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ConfigError(f"unknown {what} {name!r}; choose one of: {known}", param) from None

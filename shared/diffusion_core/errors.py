"""Exceptions raised at the core's boundary; each message is one line a user can act on."""


class UnmaskError(Exception):
    """Base class: anything a caller should show as a one-line error, never as a traceback.

    `param` names the option or input at fault, when there is one, so a service can point at it.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ConfigError(UnmaskError, ValueError):
    """An option is unknown or out of range (unknown schedule, impossible length, ...)."""


class InputError(UnmaskError, ValueError):
    """The text or data given does not fit (prompt too long, empty corpus, bad file)."""


class CheckpointError(UnmaskError):
    """A checkpoint is missing, incomplete, or does not match its manifest."""


class TokenizerError(CheckpointError):
    """A checkpoint or path has no usable tokenizer."""


class TooLargeError(UnmaskError):
    """A request would need more work or memory than its limit allows (the limit is in the message)."""

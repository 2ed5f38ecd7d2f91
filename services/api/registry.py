"""The models this process serves, loaded off the event loop at startup."""

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from diffusion_core import checkpoint
from diffusion_core.model import max_positions, pick_device
from diffusion_core.render import TokenPieces
from diffusion_core.starter import STARTER_DIFFUSION


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    source: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pieces: TokenPieces
    device: torch.device
    positions: int


def _identity(source: str) -> tuple[str, str]:
    path = Path(source)
    if not path.is_dir():
        return source, "hub"
    name = "unmask-starter" if path.resolve() == STARTER_DIFFUSION.resolve() else path.name
    name = checkpoint.read_metadata(path).get("name", name)
    manifest = path / checkpoint.MANIFEST
    version = checkpoint.sha256(manifest)[:12] if manifest.is_file() else "unversioned"
    return name, version


def load_entry(source: str, device_name: str) -> ModelEntry:
    """Load, verify and describe one model (blocking: call it from a thread)."""
    device = pick_device(device_name)
    model, tokenizer = checkpoint.load(source, device)
    name, version = _identity(source)
    return ModelEntry(
        name, version, source, model, tokenizer, TokenPieces(tokenizer), device, max_positions(model, tokenizer)
    )


class ModelRegistry:
    """Holds the current model; `error` says why it is not ready when loading failed."""

    def __init__(self, source: str | None, device: str) -> None:
        self.source = source or str(STARTER_DIFFUSION)
        self.device = device
        self.current: ModelEntry | None = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        try:
            self.current = load_entry(self.source, self.device)
        except Exception as exc:  # reported through /ready and /info; the process stays up
            self.error = str(exc)
            raise
        finally:
            self.loaded.set()

    def get(self, name: str | None) -> ModelEntry | None:
        """The named model, or the current one for None; None when it is unknown."""
        if self.current is None:
            return None
        if name is None or name == self.current.name:
            return self.current
        return None

    def names(self) -> list[str]:
        return [self.current.name] if self.current else []

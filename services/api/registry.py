"""The models this process serves: the base it was started with, and published checkpoint versions.

Every load verifies the manifest (and, for a version, the manifest's hash recorded at publish)
and runs a one-step smoke generation before the model can serve. A swap replaces `current`;
requests already running keep the entry they started with.
"""

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.errors import CheckpointError
from diffusion_core.manifest import MANIFEST, read_metadata, sha256
from diffusion_core.model import DtypeChoice, load_tokenizer, max_positions, pick_device, pick_dtype
from diffusion_core.starter import STARTER_AR, STARTER_DIFFUSION
from diffusion_core.store import BASE, Store
from diffusion_core.terminal import TokenPieces

log = logging.getLogger("unmask.api")


@dataclass(frozen=True)
class Twin:
    """The autoregressive model shown beside diffusion (same text, one token per forward pass)."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    dtype: DtypeChoice


def load_twin(source: str, device_name: str, dtype_name: str = "auto") -> Twin:
    device = pick_device(device_name)
    dtype = pick_dtype(dtype_name, device)
    model = checkpoint.load_causal_lm(source, device, dtype.dtype)
    return Twin(base_identity(source)[0], model, load_tokenizer(source), dtype)


def twin_source(ar_model: str | None, model: str | None) -> str | None:
    """The configured causal LM; by default the starter's twin when the starter is served."""
    if ar_model is not None:
        return None if ar_model.lower() == "none" else ar_model
    return str(STARTER_AR) if model is None and STARTER_AR.is_dir() else None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str  # BASE's manifest hash prefix, or a published version id (ft-...)
    source: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pieces: TokenPieces
    device: torch.device
    positions: int
    dtype: DtypeChoice


def base_identity(source: str) -> tuple[str, str]:
    """(name, version) of a checkpoint directory or hub id, without loading it."""
    path = Path(source)
    if not path.is_dir():
        return source, "hub"
    starters = {STARTER_DIFFUSION.resolve(): "unmask-starter", STARTER_AR.resolve(): "unmask-starter-ar"}
    name = starters.get(path.resolve(), path.name)
    name = read_metadata(path).get("name", name)
    manifest = path / MANIFEST
    version = sha256(manifest)[:12] if manifest.is_file() else "unversioned"
    return name, version


def load_entry(source: str, device_name: str, name: str, version: str, dtype_name: str = "auto") -> ModelEntry:
    """Load, verify and smoke-test one model (blocking: call it from a thread)."""
    device = pick_device(device_name)
    dtype = pick_dtype(dtype_name, device)
    model, tokenizer = checkpoint.load(source, device, dtype.dtype)
    _smoke(model, tokenizer)
    positions = max_positions(model, tokenizer)
    return ModelEntry(name, version, source, model, tokenizer, TokenPieces(tokenizer), device, positions, dtype)


def _smoke(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """One denoising step end to end; a model that cannot do that must not serve."""
    config = GenerationConfig(max_new_tokens=4, steps=1, block_length=4, seed=0, sampling="greedy")
    try:
        result = generate(model, tokenizer, "The", config)
    except Exception as exc:
        raise CheckpointError(f"smoke generation failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(result.texts[0], str):
        raise CheckpointError("smoke generation returned no text")
    with torch.inference_mode():
        ids = tokenizer("The", return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
        if not torch.isfinite(model(input_ids=ids).logits).all():
            raise CheckpointError("smoke generation produced non-finite logits")


class ModelRegistry:
    """The base model, the current one, and a few loaded versions; `error` says why the base failed."""

    def __init__(
        self,
        source: str | None,
        device: str,
        store: Store | None = None,
        max_loaded: int = 2,
        twin_source: str | None = None,
        dtype: str = "auto",
    ) -> None:
        self.source = source or str(STARTER_DIFFUSION)
        self.twin_source = twin_source
        self.twin: Twin | None = None
        self.twin_error: str | None = None
        self.device, self.dtype = device, dtype
        self.store = store
        self.max_loaded = max_loaded
        self.base_name, self.base_version = base_identity(self.source)
        self.base: ModelEntry | None = None
        self.current: ModelEntry | None = None
        self.serving = BASE  # the pointer value `current` answers to
        self.error: str | None = None
        self.reload_error: dict[str, Any] | None = None
        self.loaded = threading.Event()
        self._versions: OrderedDict[str, ModelEntry] = OrderedDict()
        self._lock = threading.Lock()

    def load(self) -> None:
        """The base model, then the twin, and only then ready: /ready means every model is in place."""
        try:
            base = load_entry(self.source, self.device, self.base_name, self.base_version, self.dtype)
            log.info("serving %s on %s in %s (%s)", base.name, base.device, base.dtype.name, base.dtype.reason)
            self._load_twin()
            self.base = self.current = base
        except Exception as exc:  # reported through /ready and /info; the process stays up
            self.error = str(exc)
            raise
        finally:
            self.loaded.set()

    def _load_twin(self) -> None:
        if self.twin_source is None:
            return
        try:
            self.twin = load_twin(self.twin_source, self.device, self.dtype)
        except Exception as exc:  # the comparison is optional: report it, serve on
            self.twin_error = str(exc)

    def version(self, version: str) -> ModelEntry:
        """A published version, loaded and verified on first use (blocking)."""
        with self._lock:
            if version in self._versions:
                self._versions.move_to_end(version)
                return self._versions[version]
            assert self.store is not None, "versions need the store"
            record = self.store.version(version)
            if record is None:
                raise CheckpointError(f"unknown checkpoint version {version!r}")
            path = self.store.path(version)
            if not (path / MANIFEST).is_file() or sha256(path / MANIFEST) != record["manifest_sha256"]:
                raise CheckpointError(f"{version}: manifest missing or not the one recorded at publish")
            entry = load_entry(str(path), self.device, record["model"], version, self.dtype)
            self._versions[version] = entry
            self._evict()
            return entry

    def _evict(self) -> None:
        while len(self._versions) > self.max_loaded:
            oldest = next(v for v in self._versions if self.current is None or v != self.current.version)
            del self._versions[oldest]

    def switch(self, pointer: str) -> ModelEntry:
        """Serve `pointer` (a version, or BASE) from now on; raises and changes nothing on failure."""
        entry = self.base if pointer == BASE else self.version(pointer)
        if entry is None:
            raise CheckpointError("the base model is not loaded")
        self.current, self.serving, self.reload_error = entry, pointer, None
        return entry

    def refuse(self, pointer: str, reason: str) -> None:
        self.reload_error = {"version": pointer, "message": reason, "at": time.time()}

    def get(self, name: str | None) -> ModelEntry | None:
        """A loaded model by name or version (None: the current one); None when not loaded."""
        if name is None:
            return self.current
        for entry in (self.current, self.base, *self._versions.values()):
            if entry is not None and name in (entry.name, entry.version):
                return entry
        return None

    def names(self) -> list[str]:
        return list(dict.fromkeys(e.name for e in (self.base, *self._versions.values()) if e is not None))

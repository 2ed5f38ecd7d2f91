"""unmask's core: masked-LM diffusion training, generation, checkpoints and evaluation.

Names load on first use (PEP 562), so light modules (store, jobs, errors) import without torch:
the RQ worker's parent process forks a fresh work horse per job and must not touch torch itself.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_HOMES = {
    "MASK_PLACEHOLDER": "canvas",
    "Canvas": "canvas",
    "build_canvas": "canvas",
    "GenerationConfig": "config",
    "Denoiser": "denoise",
    "Frame": "denoise",
    "Generation": "denoise",
    "Result": "denoise",
    "StepInputs": "passes",
    "StepOutputs": "passes",
    "create_denoiser": "denoise",
    "decode": "denoise",
    "denoising": "denoise",
    "generate": "denoise",
    "run": "denoise",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "TokenizerError": "errors",
    "UnmaskError": "errors",
}

__all__ = [
    "Canvas",
    "CheckpointError",
    "ConfigError",
    "Denoiser",
    "Frame",
    "Generation",
    "GenerationConfig",
    "InputError",
    "MASK_PLACEHOLDER",
    "Result",
    "StepInputs",
    "StepOutputs",
    "TokenizerError",
    "UnmaskError",
    "build_canvas",
    "create_denoiser",
    "decode",
    "denoising",
    "generate",
    "run",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


if TYPE_CHECKING:
    from . import animation, checkpoint, jobs, store  # noqa: F401  (submodules, for type checkers)
    from .canvas import MASK_PLACEHOLDER, Canvas, build_canvas
    from .config import GenerationConfig
    from .denoise import (
        Denoiser,
        Frame,
        Generation,
        Result,
        create_denoiser,
        decode,
        denoising,
        generate,
        run,
    )
    from .errors import CheckpointError, ConfigError, InputError, TokenizerError, UnmaskError
    from .passes import StepInputs, StepOutputs

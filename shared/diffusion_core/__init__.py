"""unmask's core: masked-LM diffusion training, generation, checkpoints and evaluation."""

from .canvas import MASK_PLACEHOLDER, Canvas, build_canvas
from .config import GenerationConfig
from .denoise import Denoiser, Frame, Generation, StepInputs, create_denoiser, decode, denoise, generate, run
from .errors import CheckpointError, ConfigError, InputError, TokenizerError, UnmaskError

__all__ = [
    "MASK_PLACEHOLDER",
    "Canvas",
    "CheckpointError",
    "ConfigError",
    "Denoiser",
    "Frame",
    "Generation",
    "GenerationConfig",
    "InputError",
    "StepInputs",
    "TokenizerError",
    "UnmaskError",
    "build_canvas",
    "create_denoiser",
    "decode",
    "denoise",
    "generate",
    "run",
]

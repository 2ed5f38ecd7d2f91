"""Resumable snapshots of a training run: weights, optimizer moments, random states and block order.

Safetensors and JSON only (never pickle), each file replaced atomically, so a snapshot is either
the previous one or the new one, whenever the run is killed.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import checkpoint

MODEL = "model"  # the snapshot's weights, a checkpoint directory inside the run folder


def save(
    directory: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    order: torch.Tensor,
    state: dict[str, Any],
) -> None:
    """Everything a resumed run needs: the masking draws' generator, dropout's RNG, this epoch's order."""
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.save(model, tokenizer, directory / MODEL, {"snapshot_step": state["step"]})
    tensors, groups = _flatten_optimizer(optimizer)
    tensors["generator"] = generator.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["order"] = order
    tmp = directory / "optimizer.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(directory / "optimizer.safetensors")
    checkpoint.write_json(directory / "state.json", {**state, "param_groups": groups})


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous() for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def restore(
    directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[dict[str, Any], torch.Tensor] | None:
    """(the run's state, this epoch's block order) from the snapshot, the optimizer and random states set;
    None when there is no snapshot."""
    if not (directory / "state.json").is_file():
        return None
    state = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    generator.set_state(tensors.pop("generator"))
    torch.set_rng_state(tensors.pop("torch_rng"))
    order = tensors.pop("order")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state, order

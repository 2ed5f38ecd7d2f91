"""What a training run reports: progress records, the log and its plot, the training stages a
published checkpoint carries."""

import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .plots import line_chart


@dataclass
class Progress:
    """What a watcher sees: shared by the CLI bar, the JSON log and a queued job's status."""

    step: int
    total_steps: int
    tokens: int
    loss: float
    level_losses: dict[str, float]
    learning_rate: float
    elapsed_s: float
    eta_s: float
    eval: dict[str, float] = field(default_factory=dict)


def level_key(rate: float) -> str:
    return f"{math.ceil(rate * 10 - 1e-9) / 10:.1f}"


def record(
    state: dict[str, Any],
    sums: dict[str, list[float]],
    total: int,
    elapsed: float,
    lr: float,
    evaluation: dict[str, float],
    time_limit: float,
) -> Progress:
    levels = {k: sum(v) / len(v) for k, v in sorted(sums.items())}
    losses = [x for v in sums.values() for x in v]
    step = state["step"]
    progress = Progress(
        step=step,
        total_steps=total,
        tokens=state["tokens"],
        loss=sum(losses) / len(losses) if losses else float("nan"),
        level_losses=levels,
        learning_rate=lr,
        elapsed_s=elapsed,
        eta_s=eta(elapsed, step, total, time_limit),
        eval=evaluation,
    )
    state["log"].append(asdict(progress))
    return progress


def eta(elapsed: float, step: int, total: int, time_limit: float) -> float:
    by_steps = elapsed / step * (total - step) if step else 0.0
    return min(by_steps, max(0.0, time_limit - elapsed)) if time_limit else by_steps


def plot(log: list[dict[str, Any]], path: Path) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in log:
        for level, loss in entry["level_losses"].items():
            series.setdefault(f"rate {level}", []).append((entry["step"], loss))
        for rate, loss in entry["eval"].items():
            series.setdefault(f"held-out {rate}", []).append((entry["step"], loss))
    line_chart(dict(sorted(series.items())), path, "masked-token loss per masking level", "step", "loss (nats)")


def stages_of(source: str | None) -> list[dict[str, Any]]:
    """The training stages a checkpoint's weights went through, oldest first, from its unmask.json
    (a checkpoint from before stages were recorded gives its one `training` record)."""
    path = Path(source) if source else None
    if path is None or not (path / checkpoint.METADATA).is_file():
        return []
    meta = checkpoint.read_metadata(path)
    if "stages" in meta:
        return list(meta["stages"])
    if "training" in meta:
        return [
            {
                "base": meta.get("base"),
                **meta["training"],
                "held_out_loss": meta.get("metrics", {}).get("held_out_loss"),
            }
        ]
    return []


def write_log_into(path: Path, log: list[dict[str, Any]]) -> None:
    """The training log and its plot, written beside the weights before the manifest signs them."""
    checkpoint.write_json(path / "training_log.json", log)
    plot(log, path / "loss.png")


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

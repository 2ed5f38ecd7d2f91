"""The data-repetition curve: held-out loss against passes over the corpus, diffusion model and twin.

Read from the bundled starter's own records (no training here): the diffusion model's two training
logs (stage 1 on the CPU, stage 2 continuing it on a GPU; held-out masked-token loss at rates 0.15
and 0.5 every 250 steps) and the twin's held-out curve (next-token loss, twice per pass). Each model
is scored by its own loss, so compare where each curve stops falling, not their heights. Prabhudesai
et al. (2025) report diffusion LMs gaining for ~100 passes where autoregressive ones stop after ~4.

    python bench/repetition.py       # prints the table, draws docs/img/repetition.png
"""

import json
import math
from pathlib import Path

from common import record

from diffusion_core import checkpoint
from diffusion_core.plots import line_chart
from diffusion_core.starter import STARTER_AR, STARTER_DIFFUSION

IMAGE = Path(__file__).resolve().parents[1] / "docs" / "img" / "repetition.png"
HELD_OUT = 0.05  # the recipe's held-out share: passes count the other 95% of the corpus


def diffusion_curve() -> dict[str, list[tuple[float, float]]]:
    corpus = checkpoint.read_metadata(STARTER_DIFFUSION)["data"]["tokens"] * (1 - HELD_OUT)
    logs = [STARTER_DIFFUSION / "training_log_stage1.json", STARTER_DIFFUSION / "training_log.json"]
    curves: dict[str, list[tuple[float, float]]] = {"0.15": [], "0.50": []}
    offset = 0
    for path in logs:
        if not path.is_file():
            continue
        log = json.loads(path.read_text())
        for entry in log:
            for rate, loss in entry["eval"].items():
                if rate in curves:
                    curves[rate].append(((offset + entry["tokens"]) / corpus, loss))
        offset += log[-1]["tokens"]
    return {f"diffusion, rate {rate}": points for rate, points in curves.items()}


def twin_curve() -> list[tuple[float, float]]:
    training = checkpoint.read_metadata(STARTER_AR)["training"]
    return [(p["passes"], p["held_out_loss"]) for p in training.get("curve", []) if p["passes"] > 0]


def main() -> None:
    series = {**diffusion_curve(), "twin (next-token)": twin_curve()}
    print(f"{'passes':>8}  {'diffusion @0.15':>15}  {'diffusion @0.50':>15}")
    d15, d50 = series["diffusion, rate 0.15"], series["diffusion, rate 0.50"]
    for i in range(0, len(d15), max(1, len(d15) // 12)):
        print(f"{d15[i][0]:>8.1f}  {d15[i][1]:>15.3f}  {d50[i][1]:>15.3f}")
    print(f"{d15[-1][0]:>8.1f}  {d15[-1][1]:>15.3f}  {d50[-1][1]:>15.3f}  (last)")
    twin = series["twin (next-token)"]
    print(f"\n{'passes':>8}  {'twin':>8}")
    for passes, loss in twin:
        print(f"{passes:>8.2f}  {loss:>8.3f}")
    if twin:
        best = min(twin, key=lambda p: p[1])
        print(f"twin: best held-out loss {best[1]:.3f} after {best[0]:.2f} passes; it rose afterwards"
              if best != twin[-1] else f"twin: still improving at {best[0]:.2f} passes")  # fmt: skip
    print(f"diffusion: {d15[-1][1]:.3f} at rate 0.15 after {d15[-1][0]:.0f} passes, lowest so far: "
          f"{min(loss for _, loss in d15):.3f}")  # fmt: skip
    logged = {name: [(math.log10(x), y) for x, y in points if x > 0] for name, points in series.items()}
    title = "held-out loss against passes over the corpus"
    line_chart(logged, IMAGE, title, "passes over the corpus (log10: 0 = 1 pass, 1 = 10, 2 = 100)", "held-out loss")
    print(f"drawn: {IMAGE.name}")


if __name__ == "__main__":
    with record("repetition", "Data repetition: held-out loss against passes over the corpus"):
        main()

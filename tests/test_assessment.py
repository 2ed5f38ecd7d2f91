"""`unmask eval`: likelihood, the decoding grid against a causal LM, and the Pareto front."""

import json

from PIL import Image

from diffusion_core.assessment import grid, pareto_front
from diffusion_core.cli import main


def test_eval_reports_likelihood_and_every_setting(tiny_checkpoint, tiny_twin, corpus_file, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_checkpoint), "--reference", str(tiny_twin), "--data", str(corpus_file)]
    assert main([*args, "--prompts", "3", "--new-tokens", "8", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "eval.json").read_text())
    losses = report["likelihood"]["masked_token_loss"]
    assert list(losses) == [f"{(i + 0.5) / 10:.2f}" for i in range(10)]
    assert report["likelihood"]["elbo_ppl_bound"] > 1
    rows = report["decoding"]
    assert set(rows) == {"autoregressive, top_p 0.9", *grid(8)}
    for name, row in rows.items():
        assert row["gen_ppl"] > 1 and row["tokens_per_s"] > 0 and 0 <= row["distinct_2"] <= 1, name
    for name, config in grid(8).items():  # fixed-step settings take exactly their steps (end tokens forbidden)
        if config.remasking != "threshold":
            assert rows[name]["nfe_per_sample"] == config.steps, name
    assert (
        rows["8 steps (one token per step)"]["nfe_per_sample"] == 8 and rows["2 steps (default)"]["nfe_per_sample"] == 2
    )
    assert report["environment"]["torch"] and report["models"]["reference"] == str(tiny_twin)
    table = (out / "eval.md").read_text()
    assert table.count("\n| ") >= 2 + len(rows) and "gen-PPL" in table
    assert Image.open(out / "pareto.png").size == (900, 540)
    assert "written:" in capsys.readouterr().out


def test_eval_without_a_reference_for_a_custom_model_names_the_flag(tiny_checkpoint, capsys):
    assert main(["eval", "--model", str(tiny_checkpoint)]) == 2
    assert "--reference" in capsys.readouterr().err


def test_the_pareto_front_keeps_only_unbeaten_settings():
    points = {"fast and good": (100, 20), "slow and good": (10, 15), "fast and bad": (100, 40), "dominated": (50, 30)}
    assert set(pareto_front(points)) == {"fast and good", "slow and good"}

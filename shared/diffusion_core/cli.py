"""The `unmask` command line. Errors print one line and exit with status 2.

Services add their own subcommands (serve, worker, up) through the `unmask.commands` entry
point group, so the core never imports them.
"""

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError, UnmaskError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


def default_model() -> str:
    """UNMASK_MODEL, else the bundled starter checkpoint."""
    from .starter import STARTER_DIFFUSION

    return os.environ.get("UNMASK_MODEL") or str(STARTER_DIFFUSION)


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--dtype",
        default=os.environ.get("UNMASK_DTYPE") or "auto",
        help="weights: auto | float32 | bfloat16 | float16 (default: UNMASK_DTYPE, else auto: bfloat16 where the"
        " device computes it natively, a GPU or a CPU with AVX512-BF16 or AMX, else float32)",
    )


def _device_and_dtype(args: argparse.Namespace):  # -> tuple[torch.device, DtypeChoice]
    from .model import pick_device, pick_dtype

    device = pick_device(args.device)
    return device, pick_dtype(args.dtype, device)


def _generation_args(p: argparse.ArgumentParser) -> None:
    """One flag per GenerationConfig parameter, with its default, help and choices (no torch imported)."""
    from dataclasses import fields

    from .config import GenerationConfig

    for f in fields(GenerationConfig):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.default is True:
            p.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", help=help_text)
        elif f.default is False:
            p.add_argument(flag, action="store_true", help=help_text)
        else:
            kind = type(f.default) if f.default is not None else int
            choices = f.metadata["choices"]  # checked by GenerationConfig, whose error names the known ones
            help_text += f": {' | '.join(choices)}" if choices else ""
            p.add_argument(flag, type=kind, default=f.default, help=help_text)


def generation_config(args: argparse.Namespace):  # -> GenerationConfig
    from dataclasses import fields

    from .config import GenerationConfig

    return GenerationConfig(**{f.name: getattr(args, f.name) for f in fields(GenerationConfig)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unmask", description="Masked-LM diffusion: train, generate, serve.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write text by iterative denoising")
    g.add_argument("prompt", help="prompt text; each <mask> is one token to fill in place")
    g.add_argument(
        "--model", default=None, help="checkpoint directory or hub id (default: UNMASK_MODEL or the starter)"
    )
    _device_args(g)
    g.add_argument("--show-steps", action="store_true", help="print every denoising step")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    _generation_args(g)

    t = sub.add_parser("train", help="fine-tune a masked LM for diffusion (or train one from scratch)")
    _train_args(t)
    v = sub.add_parser("visualize", help="record a generation as an animated GIF, PNG frames and an HTML player")
    v.add_argument("prompt", help="prompt text; each <mask> is one token to fill in place")
    v.add_argument("--out", required=True, help="folder for run.gif, frames/NNNN.png and run.html")
    v.add_argument(
        "--model", default=None, help="checkpoint directory or hub id (default: UNMASK_MODEL or the starter)"
    )
    _device_args(v)
    _generation_args(v)

    c = sub.add_parser("compare", help="diffusion and its autoregressive twin side by side, on one wall clock")
    c.add_argument("prompt")
    c.add_argument("--out", required=True, help="folder for compare.gif and compare.json")
    c.add_argument("--model", default=None, help="diffusion checkpoint (default: UNMASK_MODEL or the starter)")
    c.add_argument("--ar-model", default=None, help="causal LM checkpoint or hub id (default: the starter's twin)")
    _device_args(c)
    c.add_argument("--fps", type=float, default=10.0, help="GIF frames per second of wall-clock time")
    _generation_args(c)

    e = sub.add_parser("eval", help="held-out likelihood and a grid of decoding settings against a causal LM")
    e.add_argument("--model", default=None, help="diffusion checkpoint (default: UNMASK_MODEL, the starter)")
    e.add_argument("--reference", default=None, help="causal LM that scores samples (default: the starter's twin)")
    e.add_argument(
        "--ar-model", default=None, help="causal LM sampled as the baseline (default: the reference; 'none')"
    )
    e.add_argument(
        "--data", nargs="*", default=None, help="held-out text files (default: the starter's held-out split)"
    )
    e.add_argument("--prompts", type=int, default=20, help="held-out prompts, one sample each per setting")
    e.add_argument("--new-tokens", type=int, default=64, help="tokens each sample writes")
    e.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed + i (several show the noise)")
    e.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="TEXT",
        help="evaluate only the settings whose names contain TEXT (repeatable), e.g. --only default --only cache",
    )
    e.add_argument("--out", default="runs/eval", help="folder for eval.json, eval.md and pareto.png")
    e.add_argument("--work", default="runs/starter", help="where the starter corpus is (extracted if missing)")
    _device_args(e)

    s = sub.add_parser("starter", help="rebuild or re-evaluate the bundled starter models")
    s.add_argument(
        "action", choices=["build", "twin", "eval"], help="build both models, train the twin only, or re-evaluate"
    )
    s.add_argument("--work", default="runs/starter", help="folder for the corpus and resumable state")
    s.add_argument("--output", default=None, help="where to write {diffusion,ar}/ (default: models/starter)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | mps: where the diffusion model trains")
    s.add_argument(
        "--from",
        dest="start_from",
        default=None,
        help="build: continue this diffusion checkpoint (e.g. models/starter/diffusion) instead of the MiniLM"
        " encoder; twin: continue this twin (e.g. models/starter/ar) from its best snapshot",
    )
    s.add_argument("--batch-size", type=int, default=None, help="blocks per step (cpu: 16, cuda: 256)")
    s.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (cpu: 3e-4, cuda: 2e-4)")
    s.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up (cpu: 200, cuda: 50)")
    s.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps (cpu: 0, i.e. until the time limit; cuda: 4530)"
    )
    s.add_argument("--diffusion-minutes", type=float, default=None, help="wall-clock limit (cpu: 75; cuda: 10, a cap)")
    s.add_argument("--ar-passes", type=float, default=6.0, help="most passes over the corpus for the twin")
    s.add_argument(
        "--ar-patience", type=int, default=2, help="stop the twin after this many evaluations without improvement"
    )
    s.add_argument("--ar-minutes", type=float, default=None, help="wall-clock cap on the twin's training")
    h = sub.add_parser(
        "lm-eval",
        add_help=False,
        help="lm-evaluation-harness with unmask's model registered: unmask lm-eval --model unmask --model_args"
        " pretrained=PATH --tasks TASKS (needs pip install -e .[eval])",
    )
    h.add_argument("harness_args", nargs=argparse.REMAINDER, help="lm_eval's own arguments")
    for plugin in entry_points(group="unmask.commands"):
        COMMANDS.update(plugin.load()(sub))
    return parser


def _train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its default, help and choices (no torch imported)."""
    from dataclasses import MISSING, fields

    from .config import TrainConfig

    source = p.add_mutually_exclusive_group(required=True)
    for f in fields(TrainConfig):
        flag, choices = "--" + f.name.replace("_", "-"), f.metadata["choices"]
        help_text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        where = source if f.name in ("base", "architecture") else p
        if f.name == "data":
            p.add_argument("data", nargs="+", help=help_text)
        elif f.name == "levels":
            p.add_argument(flag, type=_levels, default=f.default, help=help_text)
        elif f.name == "eval_data":
            p.add_argument(flag, nargs="+", default=(), help=help_text)
        elif f.default is False:
            p.add_argument(flag, action="store_true", help=help_text)
        elif f.default is MISSING:
            p.add_argument(flag, required=True, help=help_text)
        else:
            kind = _scalar_type(f.type)
            help_text += f": {' | '.join(choices)}" if choices else ""
            where.add_argument(flag, type=kind, default=f.default, help=help_text)


def _scalar_type(annotation: object) -> type:
    """int, float or str from a field's annotation (`float | None` gives float)."""
    import typing

    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = options[0]
    assert kind in (int, float, str), annotation
    return kind  # type: ignore[return-value]


def train_config(args: argparse.Namespace):  # -> TrainConfig
    from dataclasses import fields

    from .config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    return TrainConfig(**{**values, "data": tuple(args.data), "eval_data": tuple(args.eval_data)})


def _levels(text: str) -> tuple[float, ...] | None:
    if text == "continuous":
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers or 'continuous', not {text!r}") from None


@command("generate")
def _generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import checkpoint
    from .denoise import create_denoiser, decode, run
    from .terminal import frame_text

    config = generation_config(args)
    device, dtype = _device_and_dtype(args)
    model, tokenizer = checkpoint.load(args.model or default_model(), device, dtype.dtype)
    state = create_denoiser(model, tokenizer, args.prompt, config)
    bar = tqdm(total=state.plan.passes(), unit="pass", disable=None if not args.show_steps else True, leave=False)
    for frame in run(model, state, every_step=args.show_steps, on_step=lambda s: bar.update(s.nfe - bar.n)):
        if args.show_steps:
            for row in range(config.num_samples):
                label = f"[{frame.step:>3}]" + (f" #{row}" if config.num_samples > 1 else "")
                print(f"{label} {frame_text(tokenizer, frame, row)}", flush=True)
    bar.close()
    result = state.result()
    texts = decode(tokenizer, result)
    if args.json:
        made = {"texts": texts, "seed": result.seed, "nfe": result.nfe, "finish_reasons": result.finish_reasons}
        print(json.dumps({**made, "dtype": dtype.name, "dtype_reason": dtype.reason}))
    else:
        for i, text in enumerate(texts):
            print(("" if len(texts) == 1 else f"--- sample {i} (seed {result.seed + i})\n") + text, flush=True)
        _say_what_ended_early(result.finish_reasons, result.generated_tokens, config.max_new_tokens)
    return 0


def _say_what_ended_early(reasons: list[str], counts: list[int], asked: int) -> None:
    """On stderr, after the texts: which samples wrote their end token before `asked` tokens."""
    for i, (reason, count) in enumerate(zip(reasons, counts)):
        if reason == "eos" and count < asked:
            which = f"sample {i}" if len(reasons) > 1 else "the sample"
            print(f"{which} ended at its end token after {count} of {asked} tokens (--forbid-eos writes them all)",
                  file=sys.stderr)  # fmt: skip


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .training import train

    config = train_config(args)
    path = train(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote it
        print(f"checkpoint written to {path}")
    return 0


@command("starter")
def _starter(args: argparse.Namespace) -> int:
    from . import starter
    from .autoregressive import TwinTraining

    out = Path(args.output) if args.output else starter.STARTER
    twin = TwinTraining(
        max_passes=args.ar_passes,
        patience=args.ar_patience,
        time_limit_s=math.inf if args.ar_minutes is None else args.ar_minutes * 60,
    )
    if args.action == "build":
        from .model import pick_device

        recipe = starter.recipe_for(
            pick_device(args.device),
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps,
            max_steps=args.max_steps,
            minutes=args.diffusion_minutes,
        )
        start = Path(args.start_from) if args.start_from else None
        metrics = starter.build(Path(args.work), out, recipe, twin, args.device, start)
    elif args.action == "twin":
        start = Path(args.start_from) if args.start_from else None
        path = starter.train_ar_twin(starter.corpus_folder(Path(args.work)), out, twin, start)
        best = json.loads((path / "unmask.json").read_text())["training"]["best"]
        print(json.dumps(best, indent=2))
        return 0
    else:
        metrics = starter.evaluate(out, starter.corpus_folder(Path(args.work)))
    print(json.dumps(metrics, indent=2))
    return 0


@command("visualize")
def _visualize(args: argparse.Namespace) -> int:
    from . import animation, checkpoint
    from .manifest import write_bytes

    device, dtype = _device_and_dtype(args)
    model, tokenizer = checkpoint.load(args.model or default_model(), device, dtype.dtype)
    messages = list(animation.diffusion_messages(model, tokenizer, args.prompt, generation_config(args)))
    out = Path(args.out)
    images = animation.stills(messages)
    gif = animation.save_gif(images, out / "run.gif")
    animation.save_pngs(images, out / "frames")
    page = out / "run.html"
    write_bytes(page, animation.html(messages, f"unmask: {args.prompt}").encode())
    print(f"{len(images)} frames ({len(messages) - 1} steps, {images[0].width}x{images[0].height} px)")
    print(f"  {gif}\n  {out / 'frames'}/0000.png ... {len(images) - 1:04d}.png\n  {page}")
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from . import animation, checkpoint
    from .manifest import write_bytes
    from .starter import STARTER_AR, STARTER_DIFFUSION

    device, dtype = _device_and_dtype(args)
    source = args.model or default_model()
    if args.ar_model is None and Path(source).resolve() != STARTER_DIFFUSION.resolve():
        raise ConfigError("--ar-model is required unless --model is the bundled starter", "ar_model")
    model, tokenizer = checkpoint.load(source, device, dtype.dtype)
    twin = checkpoint.load_causal_lm(args.ar_model or STARTER_AR, device, dtype.dtype)
    config = generation_config(args)
    seed = config.seed if config.seed is not None else 0

    def record_ar(tokens: int) -> list[dict]:
        decoding = animation.ar_messages(
            twin, tokenizer, args.prompt, tokens, config.top_p, config.temperature, seed, config.forbid_eos
        )
        return list(decoding)

    list(animation.diffusion_messages(model, tokenizer, args.prompt, replace(config, steps=2)))  # warm-up: the
    record_ar(4)  # first passes of a process pay one-time kernel set-up that would skew the clock
    diffusion = list(animation.diffusion_messages(model, tokenizer, args.prompt, config))
    ar = record_ar(config.max_new_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gif = out / "compare.gif"
    write_bytes(gif, animation.side_by_side_gif(diffusion, ar, fps=args.fps))  # plays at the wall clock's pace
    pictures = len(animation.synchronised(diffusion, ar, args.fps))
    summary = {
        side: {
            "forward_passes": msgs[-1]["step"],
            "tokens": sum(not f for f in msgs[-1]["samples"][0]["fixed"]),
            "seconds": round(msgs[-1]["timing"]["elapsed_ms"] / 1000, 3),
        }
        for side, msgs in (("diffusion", diffusion), ("autoregressive", ar))
    }
    checkpoint.write_json(out / "compare.json", summary)
    for side, row in summary.items():
        print(f"{side:>15}: {row['tokens']} tokens, {row['forward_passes']} forward passes, {row['seconds']:.2f} s")
    print(f"{pictures} frames at {args.fps:g} fps: {gif}")
    return 0


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from . import assessment, checkpoint, starter
    from .data import pack, read_texts
    from .manifest import write_bytes
    from .model import load_tokenizer, max_positions

    settings = assessment.chosen(assessment.grid(args.new_tokens), args.only)
    device, dtype = _device_and_dtype(args)
    source = args.model or default_model()
    is_starter = Path(source).resolve() == starter.STARTER_DIFFUSION.resolve()
    if args.reference is None and not is_starter:
        raise ConfigError("--reference (a causal LM, e.g. gpt2-large) is required for a model other than the starter")
    if args.data is None and not is_starter:
        raise ConfigError("--data (held-out text files) is required for a model other than the starter", "data")
    model, tokenizer = checkpoint.load(source, device, dtype.dtype)
    reference_source = args.reference or str(starter.STARTER_AR)
    reference = checkpoint.load_causal_lm(reference_source, device)  # the judge scores in float32 everywhere
    reference_tokenizer = load_tokenizer(reference_source)
    ar_source = None if args.ar_model == "none" else args.ar_model or reference_source
    ar = checkpoint.load_causal_lm(ar_source, device, dtype.dtype) if ar_source else None
    if args.data:
        held_out = pack(read_texts(args.data), tokenizer, min(128, max_positions(model, tokenizer)))
    else:
        held_out = starter.held_out_blocks(starter.corpus_folder(Path(args.work)), tokenizer)
    report = assessment.assess(
        model, tokenizer, reference, reference_tokenizer, ar, load_tokenizer(ar_source) if ar_source else None,
        held_out, prompts=args.prompts, new_tokens=args.new_tokens, settings=settings, seed=args.seed,
    )  # fmt: skip
    report["environment"].update(dtype=dtype.name, dtype_reason=dtype.reason)
    report["models"] = {"diffusion": source, "reference": reference_source, "autoregressive": ar_source}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out / "eval.json", report)
    write_bytes(out / "eval.md", assessment.markdown(report).encode())
    assessment.plot(report, out / "pareto.png")
    print(assessment.markdown(report))
    print(f"written: {out / 'eval.json'}, {out / 'eval.md'}, {out / 'pareto.png'}")
    return 0


@command("lm-eval")
def _lm_eval(args: argparse.Namespace) -> int:
    try:
        from . import harness
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("lm_eval"):
            raise
        raise ConfigError("unmask lm-eval needs lm-evaluation-harness: pip install -e '.[eval]'") from None
    return harness.main(args.harness_args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lm-eval"]:  # every later argument is lm_eval's, options included
        args = argparse.Namespace(command="lm-eval", harness_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    from .runtime import keep_freed_memory, quiet_transformers

    quiet_transformers()
    keep_freed_memory()
    try:
        return COMMANDS[args.command](args)
    except UnmaskError as exc:
        print(f"unmask: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unmask: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""A mutation check: plausible one-line bugs, each applied alone, and whether the tests kill it.

Each mutant replaces one snippet of a module (the snippet must occur exactly once), runs the tests
of that part with the mutant in place, and puts the file back. The core's mutants run the core's
tests; the services' mutants (engine, middleware, registry and reloader, store, supervisor, worker
jobs, routes) and the cache's run the tests of their part. A mutant the tests do not kill is a bug
they would let through: it gets a test, or a sentence in the report saying why not.

    python bench/mutants.py               # every mutant, about 25 minutes on 2 cores
    python bench/mutants.py --part core   # the core's only (or services, or eval), recorded as mutants_<part>
"""

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import record

ROOT = Path(__file__).resolve().parents[1]
CORE_TESTS = [
    "tests/test_denoise.py",
    "tests/test_plan.py",
    "tests/test_cache.py",
    "tests/test_schedules.py",
    "tests/test_collator.py",
    "tests/test_remasking.py",
    "tests/test_sampling.py",
    "tests/test_draws.py",
    "tests/test_training.py",
    "tests/api/test_engine.py",
]


@dataclass(frozen=True)
class Mutant:
    file: str  # under shared/diffusion_core/, or a path from the repository's root
    before: str
    after: str
    bug: str
    tests: tuple[str, ...] = tuple(CORE_TESTS)

    @property
    def path(self) -> Path:
        return ROOT / (self.file if "/" in self.file else f"shared/diffusion_core/{self.file}")

    @property
    def part(self) -> str:
        if self.tests in (HARNESS, LOGPROBS):
            return "eval"
        return "core" if self.tests == tuple(CORE_TESTS) else "services"

    @property
    def name(self) -> str:
        return self.file.removeprefix("services/")


MUTANTS = [
    Mutant("plan.py", "(remaining - target).clamp(min=1)", "(remaining - target).clamp(min=0)",
           "a pass may commit nothing"),
    Mutant("denoise.py", "if now.step + 1 >= steps:", "if now.step + 1 > steps:",
           "the block's last planned pass does not fill what is left"),
    Mutant("denoise.py", "first = torch.where(has, hit.int().argmax(-1), length)",
           "first = torch.where(has, hit.int().argmax(-1) + 1, length)", "one token survives past the end token"),
    Mutant("denoise.py", "window_cols = (slots - (block.start - 1)).flatten()",
           "window_cols = (slots - block.start).flatten()", "the head reads the wrong column of a window"),
    Mutant("denoise.py", "self.row_seeds = (self.seed + torch.arange(b, device=device)).unsqueeze(-1)",
           "self.row_seeds = (self.seed + 0 * torch.arange(b, device=device)).unsqueeze(-1)",
           "every sample of a request draws the same numbers"),
    Mutant("plan.py", "length = max(block_end, text_end)", "length = block_end",
           "without future masks, text after a blank drops out of view"),
    Mutant("schedules.py", "return math.cos(math.pi * r / 2)", "return math.cos(math.pi * r / 3)",
           "the cosine schedule is wrong"),
    Mutant("schedules.py", "torch.floor(total * gamma(step / steps) + 1e-9)", "torch.ceil(total * gamma(step / steps))",
           "the schedule rounds up"),
    Mutant("collator.py", "(torch.arange(length) > prefix)", "(torch.arange(length) >= prefix)",
           "the visible prefix is one token shorter"),
    Mutant("collator.py", "masked[none.nonzero().squeeze(-1), fallback[none]] = True", "pass",
           "a row may have nothing masked"),
    Mutant("collator.py", "masked = eligible & (scores < rate)", "masked = eligible & (scores < rate / 2)",
           "the masking rate is halved"),
    Mutant("remasking.py", "return (conf >= threshold) | best", "return conf >= threshold",
           "threshold remasking may keep nothing"),
    Mutant("remasking.py", "order = scores.argsort(dim=-1, descending=True)", "order = scores.argsort(dim=-1)",
           "low-confidence remasking keeps the least confident"),
    Mutant("remasking.py", "near = (apart.columns - apart.columns.gather(1, best)).abs() < apart.spacing",
           "near = (apart.columns - apart.columns.gather(1, best)).abs() < 1",
           "a step's kept tokens may be neighbours"),
    Mutant("remasking.py", "short = (counts - kept.sum(-1)).clamp(min=0)", "short = counts * 0",
           "a step keeps fewer tokens than the schedule asks when room runs out"),
    Mutant("sampling.py", "outside = (probs.cumsum(-1) - probs) >= top_p", "outside = probs.cumsum(-1) >= top_p",
           "the nucleus drops the token that crosses top_p"),
    Mutant("cache.py", "stale or self.blocks >= self.refresh", "stale or self.blocks > self.refresh",
           "the cache refreshes one block late"),
    Mutant("cache.py", "real = attention_mask.gather(1, at).bool() & (query >= 0)",
           "real = attention_mask.gather(1, at).bool()", "padding queries of a joined batch are attended to"),
]  # fmt: skip

ENGINE = ("tests/api/test_engine.py", "tests/api/test_streaming.py", "tests/api/test_generate.py")
EDGE = ("tests/api/test_hardening.py", "tests/api/test_generate.py")
RELOAD = ("tests/api/test_hot_reload.py", "tests/test_store.py", "tests/test_checkpoint.py")
STACK = ("tests/stack/test_watch.py",)
JOBS = ("tests/trainer/test_worker.py", "tests/api/test_fine_tuning.py")
ROUTES = ("tests/api/test_generate.py", "tests/api/test_chat.py")
CACHE = ("tests/test_cache.py", "tests/api/test_engine.py")
HARNESS = ("tests/test_harness.py",)
LOGPROBS = ("tests/api/test_logprobs.py", "tests/api/test_chat.py")

# Written as a reviewer hunting for bugs in the services and the cache would: each a slip one line
# long that a green suite would ship.
SERVICE_MUTANTS = [
    Mutant("services/api/engine.py", "self.waiting = deque(t for t in self.waiting if not t.cancelled.is_set())",
           "self.waiting = deque(self.waiting)", "a request cancelled while waiting is still run", ENGINE),
    Mutant("services/api/engine.py", "                    ticket.deliver(exc)\n                self._retire(batch)",
           "                    ticket.deliver(exc)", "a batch whose forward pass raised is retried forever", ENGINE),
    Mutant("services/api/engine.py",
           "            if self.load >= self.capacity:\n                raise Overloaded()\n            self.waiting",
           "            if self.load > self.capacity:\n                raise Overloaded()\n            self.waiting",
           "the queue takes one request past its capacity", ENGINE),
    Mutant("services/api/engine.py", "self.max_active = max_active if batching else 1", "self.max_active = max_active",
           "UNMASK_BATCHING=false still batches", ENGINE),
    Mutant("services/api/engine.py", "return [t for t in self.active if t.entry is entry]",
           "return list(self.active)", "two models' requests share one forward pass", ENGINE),
    Mutant("services/api/engine.py", "                self.outside -= 1", "                pass",
           "the twin's slot is never given back", ENGINE),
    Mutant("services/api/engine.py", "            self.queue.get_nowait()\n", "            return\n",
           "a full stream buffer drops the newest frame, the last one too", ENGINE),
    Mutant("services/api/middleware.py", "if received > limit:", "if received >= limit:",
           "a body exactly at the limit is refused", EDGE),
    Mutant("services/api/middleware.py",
           "return _too_large(limit) if size.isdigit() and int(size) > limit else None", "return None",
           "a declared oversized body is read up to the limit before the 413", EDGE),
    Mutant("services/api/middleware.py", "                except ApiError as error:\n                    return error",
           "                except ApiError as error:\n                    return None",
           "a write route reads the body before asking for the key", EDGE),
    Mutant("services/api/middleware.py", "if not host or hostname(host) in self.hosts:",
           "if not host or any(hostname(host).startswith(h) for h in self.hosts):",
           "a host name that begins with an allowed one passes (127.0.0.1.evil.example)", EDGE),
    Mutant("services/api/registry.py",
           "if not (path / MANIFEST).is_file() or sha256(path / MANIFEST) != record[\"manifest_sha256\"]:",
           "if not (path / MANIFEST).is_file():",
           "a checkpoint whose manifest was rewritten after publish is served", RELOAD),
    Mutant("services/api/reloader.py", "            self.refused.add(wanted)\n", "",
           "a refused version is tried again on every poll", RELOAD),
    Mutant("services/api/reloader.py", "self.refused.discard(json.loads(message[\"data\"]).get(\"version\", \"\"))",
           "pass", "activating a refused version again never retries it", RELOAD),
    Mutant("services/api/registry.py", "self.current, self.serving, self.reload_error = entry, pointer, None",
           "self.current, self.serving = entry, pointer", "a refusal is still reported after a good version is served",
           RELOAD),
    Mutant("manifest.py", "        if directory.resolve() not in path.parents:", "        if False:",
           "a manifest may name a file outside its checkpoint", RELOAD),
    Mutant("store.py", "doomed = [r[\"version\"] for r in self.versions()[keep:] if r[\"version\"] != current]",
           "doomed = [r[\"version\"] for r in self.versions()[keep:]]", "pruning may delete the current version",
           RELOAD),
    Mutant("services/stack/supervisor.py", "pause = BACKOFF_S[min(crashes[part.name], len(BACKOFF_S)) - 1]",
           "pause = BACKOFF_S[0]", "a part that keeps dying is restarted every second", STACK),
    Mutant("services/stack/supervisor.py",
           "crashes[part.name] = 1 if now - part.started > STABLE_S else crashes[part.name] + 1",
           "crashes[part.name] = crashes[part.name] + 1", "a stable run does not start the backoff afresh", STACK),
    Mutant("services/stack/supervisor.py", "crashes[\"api\"] >= API_MAX_CRASHES", "crashes[\"api\"] > API_MAX_CRASHES",
           "the API may crash once more than the limit", STACK),
    Mutant("services/trainer/jobs.py", "learning_rate=hp[\"learning_rate\"],", "learning_rate=1e-4,",
           "a job trains at the default learning rate, not its own", JOBS),
    Mutant("services/trainer/jobs.py", "levels=tuple(hp[\"levels\"] or DEFAULT_LEVELS),", "levels=DEFAULT_LEVELS,",
           "a job's masking levels are ignored", JOBS),
    Mutant("services/trainer/jobs.py", "prefix_max=hp[\"prefix_max\"],", "prefix_max=0,",
           "a job's visible prefix is ignored", JOBS),
    Mutant("services/trainer/jobs.py",
           "return f\"hyperparameters.{name}\" if name in HYPERPARAMETERS else name", "return name",
           "a failed job names the core's field, not the request's", JOBS),
    Mutant("services/api/routes/openai.py",
           "p + MASK_PLACEHOLDER * body.max_tokens + body.suffix if",
           "p + body.suffix + MASK_PLACEHOLDER * body.max_tokens if", "suffix blanks go after the suffix", ROUTES),
    Mutant("services/api/routes/openai.py", "supplied = [p + (body.suffix or \"\") for p in prompts]",
           "supplied = prompts", "usage leaves the suffix out of the prompt tokens", ROUTES),
    Mutant("services/api/routes/openai.py", "choice = _choice(p * body.n + i,", "choice = _choice(i,",
           "choices of different prompts share an index", ROUTES),
    Mutant("tokenizer.py", "return text[len(start) :] if start and text.startswith(start) else text",
           "return text[len(start) :] if start else text",
           "chat cuts the template's first characters when it does not open with the start token", ROUTES),
    Mutant("cache.py", "real.append(attention[:, now.end : self.suffix_end])",
           "real.append(torch.ones_like(attention[:, now.end : self.suffix_end]))",
           "a later pass attends to cached columns past a row's end", CACHE),
    Mutant("cache.py", "fresh = computed.columns(0, now.start - now.lo)", "fresh = computed.columns(0, now.start)",
           "the prefix cache keeps columns of the block after a partial pass", CACHE),
    Mutant("model.py", "    return -(-max(m, 1) // grain) * grain", "    return max(m, 1)",
           "the head runs on every exact count of masked positions (memory grows with each)",
           ("tests/test_training.py",)),
]  # fmt: skip


# The lm-evaluation-harness backend, the estimate under it, and log-probabilities in the API.
EVAL_MUTANTS = [
    Mutant("likelihood.py", "weights = {c: 1.0 / (length * counts.count(c)) for c in set(counts)}",
           "weights = {c: 1.0 / length for c in set(counts)}",
           "a count's samples are summed, not averaged", HARNESS),
    Mutant("likelihood.py", "weights[count] * length / count))", "weights[count]))",
           "the bound's L / l weight is left out", HARNESS),
    Mutant("likelihood.py", "1.0 / count / len(masks)) for chosen in masks]", "1.0 / len(masks)) for chosen in masks]",
           "short continuations' every-mask bound loses its 1 / l", HARNESS),
    Mutant("likelihood.py", "manual_seed(seed ^ zlib.crc32(str((pair.context, pair.continuation)).encode()))",
           "manual_seed(seed + index)", "a pair's masks depend on its place in the batch", HARNESS),
    Mutant("likelihood.py", "context = pair.context[len(pair.context) - room :] if", "context = pair.context[:room] if",
           "a long context keeps its start instead of the text next to the continuation", HARNESS),
    Mutant("likelihood.py", "pick = here[best[here].argmax()]", "pick = here[0]",
           "the greedy check commits left to right, not the most confident first", HARNESS),
    Mutant("likelihood.py", "hits[i] = predicted == states[i][0][column]", "hits[i] = True",
           "every continuation counts as greedy", HARNESS),
    Mutant("harness.py", "return context[1:] if context[:1] == [self.special.start] else context",
           "return context", "rolling windows and empty contexts open with two start tokens", HARNESS),
    Mutant("harness.py", "            options[\"sampling\"] = \"greedy\"\n", "            pass\n",
           "a task's do_sample: false still samples", HARNESS),
    Mutant("harness.py", "cut_at_stops(generate(self.model, self.tokenizer, context, config).texts[0], stops)",
           "(generate(self.model, self.tokenizer, context, config).texts[0], False)",
           "generate_until ignores the task's stop strings", HARNESS),
    Mutant("outcome.py", "logprobs=[row[keep].log().tolist()", "logprobs=[row[keep].tolist()",
           "logprob reports the probability itself", LOGPROBS),
    Mutant("services/api/generation.py", "finish_reason=\"eos_token\" if reason == \"eos\" else \"length\"",
           "finish_reason=\"length\"", "details never say the model wrote its end token", LOGPROBS),
    Mutant("services/api/logprobs.py", "if len((text + t.text).lstrip()) > length:",
           "if len(text + t.text) > length:", "a reply cut at a stop string loses a token of its logprobs", LOGPROBS),
]  # fmt: skip


PARTS = {
    "core": "the core's one-line bugs",
    "services": "one-line bugs in the services and the cache",
    "eval": "one-line bugs in the lm-evaluation-harness backend, its estimate and the API's log-probabilities",
}
HANG_S = 240  # a run of a part's tests that takes longer hangs: it would fail CI's time limit too


def killed(mutant: Mutant) -> tuple[bool, str]:
    path = mutant.path
    original = path.read_text()
    if original.count(mutant.before) != 1:
        raise SystemExit(f"{mutant.file}: the snippet {mutant.before!r} must occur exactly once")
    path.write_text(original.replace(mutant.before, mutant.after))
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=ROOT, capture_output=True, text=True, timeout=HANG_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return True, f"(the tests hung: no answer in {HANG_S} s)"
    finally:
        path.write_text(original)
    failed = next((line for line in run.stdout.splitlines() if line.startswith("FAILED")), "")
    return run.returncode != 0, failed.removeprefix("FAILED ").split(" - ")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("core", "services", "eval"), help="only this part's mutants")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS + SERVICE_MUTANTS + EVAL_MUTANTS if args.part in (None, m.part)]
    for m in mutants:  # every snippet first: a stale one should not cost a half-finished run
        if m.path.read_text().count(m.before) != 1:
            raise SystemExit(f"{m.file}: the snippet {m.before!r} must occur exactly once")
    print(f"{len(mutants)} mutants; the core's against {' '.join(Path(t).name for t in CORE_TESTS)}, "
          "the others against their part's tests")  # fmt: skip
    print(f"{'file':<22} {'bug':<66} {'result':<8} first failing test")
    kills, started_all = 0, time.perf_counter()
    for mutant in mutants:
        started = time.perf_counter()
        dead, test = killed(mutant)
        kills += dead
        result = "killed" if dead else "SURVIVED"
        print(f"{mutant.name:<22} {mutant.bug:<66} {result:<8} {test} ({time.perf_counter() - started:.0f} s)")
    minutes = (time.perf_counter() - started_all) / 60
    print(f"killed {kills} of {len(mutants)} in {minutes:.0f} min")


if __name__ == "__main__":
    part = sys.argv[sys.argv.index("--part") + 1] if "--part" in sys.argv[:-1] else None
    with record(
        f"mutants_{part}" if part else "mutants",
        f"Mutation check: {PARTS[part]}" if part else
        "Mutation check: one-line bugs in the core, the services and the cache, and the tests that catch them",
    ):  # fmt: skip
        main()

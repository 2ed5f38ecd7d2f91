"""The batching engine without a server: one forward pass for many requests, each as if alone."""

import asyncio

import pytest
import torch

from diffusion_core import GenerationConfig, create_denoiser, decode, generate
from diffusion_core.model import split_head
from services.api.engine import Engine
from services.api.metrics import Metrics
from services.api.registry import load_entry

PROMPTS = ["the", "the quick brown", "a journey of a thousand", "all that glitters", "she sells <mask> shells"]


async def _finish(engine: Engine, tickets: list) -> None:
    """Start the engine on tickets queued before it runs, wait for every final frame, stop it."""
    engine.start()
    try:
        for ticket in tickets:
            await asyncio.wait_for(ticket.final(), 60)
    finally:
        engine.stop()


def _neighbours() -> list[tuple[str, GenerationConfig]]:
    """Fifteen other requests: other prompts, lengths, blocks, rules and seeds, so rows sit at other columns."""
    out = []
    for i in range(15):
        config = GenerationConfig(
            max_new_tokens=8 + 4 * (i % 5),
            steps=4 + i % 6,
            block_length=(0, 4, 8)[i % 3],
            sampling=("top_p", "temperature", "greedy", "top_k")[i % 4],
            top_k=5 if i % 4 == 3 else 0,
            remasking=("low_confidence", "random", "threshold")[i % 3],
            num_samples=1 + i % 2,
            seed=100 + i,
            cache=("none", "prefix", "dual")[i % 3 if i % 2 else 0],
            cache_refresh=1 + i % 3,
            cfg_scale=(0.0, 1.0)[i % 4 == 1],
            revise=("none", "cap", "conf")[i % 5 % 3],
            repetition_penalty=(1.0, 1.3)[i % 3 == 2],
            presence_penalty=(0.0, 0.5)[i % 4 == 2],
            edit_margin=(0.0, 0.05)[i % 7 == 3],
        )
        out.append((PROMPTS[i % len(PROMPTS)], config))
    return out


STEERED = {"cfg_scale": 1.5, "repetition_penalty": 1.4, "frequency_penalty": 0.5, "revise": "conf", "edit_margin": 0.1}


@pytest.mark.parametrize("steer", [{}, STEERED], ids=["plain", "steered"])
@pytest.mark.parametrize("cache", ["none", "dual"])
def test_a_request_writes_the_same_text_alone_and_inside_a_batch_of_16(tiny_checkpoint, cache, steer):
    """Neighbours with and without the block cache (passes of other widths, other cached lengths), with
    and without guidance (twice the rows), penalties and revision."""
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    config = GenerationConfig(max_new_tokens=24, steps=12, block_length=8, num_samples=2, seed=11, cache=cache, **steer)
    target = ("a journey", config)
    alone = generate(entry.model, entry.tokenizer, *target).texts

    async def together() -> list[str]:
        engine = Engine(Metrics(), max_active=16, max_queue=0)
        requests = _neighbours()[:7] + [target] + _neighbours()[7:]
        states = [create_denoiser(entry.model, entry.tokenizer, text, config) for text, config in requests]
        tickets = [engine.submit(state, entry, stream=False) for state in states]  # all queued before it starts
        await _finish(engine, tickets)
        results = [t.result for t in tickets]
        assert engine.stats.forward_passes == max(r.nfe for r in results), "all 16 ran in every pass, together"
        return decode(entry.tokenizer, results[7])

    assert asyncio.run(together()) == alone


def test_stream_frames_are_complete_when_read_long_after_the_step(tiny_checkpoint):
    """A reader behind the engine must see each step as it was, not the live state that moved on."""
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    config = GenerationConfig(max_new_tokens=16, steps=8, num_samples=3, seed=5, sampling="temperature")

    async def late_reader():
        engine = Engine(Metrics(), max_active=4, max_queue=0)
        state = create_denoiser(entry.model, entry.tokenizer, "the quick", config)
        ticket = engine.submit(state, entry, stream=True)
        engine.start()
        try:
            while not state.finished:
                await asyncio.sleep(0.01)
            return [f async for f in ticket.frames()]
        finally:
            engine.stop()

    frames = asyncio.run(late_reader())
    masks = [int(f.masked.sum()) for f in frames]
    assert masks == sorted(masks, reverse=True) and masks[0] > masks[-1] == 0
    for before, after in zip(frames, frames[1:]):
        newly = before.masked & ~after.masked
        assert torch.equal(newly, after.revealed & before.live), "each frame reveals exactly what the last one hid"


def test_an_idle_engine_returns_its_peak_memory_once(tiny_checkpoint, monkeypatch):
    import services.api.engine as engine_module

    released = []
    monkeypatch.setattr(engine_module, "release_freed_memory", lambda: released.append(1))
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")

    async def one_request_then_idle() -> None:
        engine = Engine(Metrics(), max_active=4, max_queue=0)
        engine.start()
        try:
            state = create_denoiser(entry.model, entry.tokenizer, "the", GenerationConfig(max_new_tokens=8, steps=2))
            assert released == [], "nothing is trimmed before any work"
            await asyncio.wait_for(engine.submit(state, entry, stream=False).final(), 30)
            await asyncio.sleep(1.6)  # three idle waits of 0.5 s
        finally:
            engine.stop()

    asyncio.run(one_request_then_idle())
    assert released == [1], "trimmed once when the engine went idle, not on every idle wait"


def test_with_batching_off_the_queue_holds_max_queue_requests(tiny_checkpoint):
    from services.api.engine import Overloaded

    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")

    async def fill() -> int:
        engine = Engine(Metrics(), max_active=16, max_queue=2, batching=False)  # not started: nothing leaves
        accepted = 0
        try:
            for _ in range(10):
                state = create_denoiser(entry.model, entry.tokenizer, "the", GenerationConfig(max_new_tokens=4))
                engine.submit(state, entry, stream=False)
                accepted += 1
        except Overloaded:
            pass
        return accepted

    assert asyncio.run(fill()) == 3, "one running and max_queue waiting, then 429"


def test_one_model_per_pass_requests_of_two_models_never_share_a_pass(tiny_checkpoint):
    """Two models served at once: each pass runs one of them, so passes add up instead of overlapping."""
    a = load_entry(str(tiny_checkpoint), "cpu", "a", "v1", "float32")
    b = load_entry(str(tiny_checkpoint), "cpu", "b", "v1", "float32")
    config = GenerationConfig(max_new_tokens=8, steps=6, block_length=0, seed=0, forbid_eos=True)

    async def together() -> tuple[int, list[int]]:
        engine = Engine(Metrics(), max_active=8, max_queue=0)
        tickets = [
            engine.submit(create_denoiser(e.model, e.tokenizer, "the", config), e, stream=False) for e in (a, b, a, b)
        ]
        await _finish(engine, tickets)
        return engine.stats.forward_passes, [t.result.nfe for t in tickets if t.result is not None]

    passes, nfes = asyncio.run(together())
    assert nfes == [6, 6, 6, 6] and passes == 12, "6 shared passes per model, never one pass for both"


def test_admission_runs_at_most_max_active_requests_per_pass(tiny_checkpoint):
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    config = GenerationConfig(max_new_tokens=8, steps=4, block_length=0, seed=0, forbid_eos=True)

    async def go() -> Engine:
        engine = Engine(Metrics(), max_active=2, max_queue=3)
        states = [create_denoiser(entry.model, entry.tokenizer, "the", config) for _ in range(5)]
        tickets = [engine.submit(s, entry, stream=False) for s in states]
        await _finish(engine, tickets)
        return engine

    engine = asyncio.run(go())
    assert engine.stats.forward_passes == 12, "five requests of 4 passes, two at a time: 4 + 4 + 4"
    assert engine.stats.rows == 20 and not engine.active and not engine.waiting


def test_a_cancelled_request_leaves_the_batch_at_the_next_step(tiny_checkpoint):
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    long = GenerationConfig(max_new_tokens=48, steps=48, block_length=0, seed=0, forbid_eos=True)
    short = GenerationConfig(max_new_tokens=8, steps=4, block_length=0, seed=0, forbid_eos=True)
    engine = Engine(Metrics(), max_active=4, max_queue=0)

    async def go() -> list:
        tickets = [
            engine.submit(create_denoiser(entry.model, entry.tokenizer, "the", c), entry, stream=False)
            for c in (long, short)
        ]
        engine.start()
        try:
            while engine.stats.forward_passes < 2:
                await asyncio.sleep(0.001)
            tickets[0].cancel()
            at.append(engine.stats.forward_passes)
            await asyncio.wait_for(tickets[1].final(), 60)
            for _ in range(200):
                if not engine.active:
                    break
                await asyncio.sleep(0.01)
        finally:
            engine.stop()
        return tickets

    at: list[int] = []
    tickets = asyncio.run(go())
    assert not engine.active, "the cancelled request was retired"
    assert tickets[0].state.nfe <= at[0] + 1, "at most the step already under way when it was cancelled"


def test_a_request_cancelled_while_waiting_never_runs(tiny_checkpoint):
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    config = GenerationConfig(max_new_tokens=8, steps=6, block_length=0, seed=0, forbid_eos=True)
    engine = Engine(Metrics(), max_active=1, max_queue=2)

    async def go() -> list:
        tickets = [
            engine.submit(create_denoiser(entry.model, entry.tokenizer, "the", config), entry, stream=False)
            for _ in range(2)
        ]
        tickets[1].cancel()  # still waiting behind the first
        engine.start()
        try:
            await asyncio.wait_for(tickets[0].final(), 60)
            await asyncio.sleep(0.3)  # time enough for an engine that admits it to run it
        finally:
            engine.stop()
        return tickets

    tickets = asyncio.run(go())
    assert tickets[1].state.nfe == 0 and engine.stats.forward_passes == 6 and not engine.waiting


def test_a_forward_pass_that_raises_fails_its_requests_once_and_the_engine_goes_on(tiny_checkpoint, monkeypatch):
    entry = load_entry(str(tiny_checkpoint), "cpu", "tiny", "v1", "float32")
    config = GenerationConfig(max_new_tokens=8, steps=4, block_length=0, seed=0, forbid_eos=True, cache="none")
    engine = Engine(Metrics(), max_active=4, max_queue=4)
    broken = {"on": True, "tries": 0}
    encoder = split_head(entry.model)[0]  # what a full pass runs before the head
    real = encoder.forward

    def forward(*args, **kwargs):
        if broken["on"]:
            broken["tries"] += 1
            raise RuntimeError("device lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", forward)

    async def go() -> tuple[list[str], int]:
        tickets = [
            engine.submit(create_denoiser(entry.model, entry.tokenizer, "the", config), entry, stream=False)
            for _ in range(2)
        ]
        engine.start()
        try:
            errors = []
            for ticket in tickets:
                with pytest.raises(RuntimeError) as caught:
                    await asyncio.wait_for(ticket.final(), 30)
                errors.append(str(caught.value))
            passes = engine.stats.forward_passes
            await asyncio.sleep(0.3)  # time enough for an engine that kept the batch to try it again
            broken["on"] = False
            later = engine.submit(create_denoiser(entry.model, entry.tokenizer, "the", config), entry, stream=False)
            result = await asyncio.wait_for(later.final(), 30)
            assert result.nfe == 4
            return errors, passes
        finally:
            engine.stop()

    errors, passes = asyncio.run(go())
    assert errors == ["device lost", "device lost"] and passes == 0
    assert broken["tries"] == 1, "the failed batch was dropped, not tried again"
    assert not engine.active

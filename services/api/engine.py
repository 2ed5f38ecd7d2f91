"""Continuous batching: every running request advances one denoising step per shared forward pass.

Requests join the running batch at the next step boundary and leave when finished or
cancelled. Each request owns its Denoiser (and so its seeds): what it generates does not
depend on what it was batched with. The loop runs in one thread, off the event loop; only that
thread touches a Denoiser. The event loop gets Frames and, with the last one, the Result.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from diffusion_core import Denoiser, Frame, Result, StepInputs
from diffusion_core.passes import forward, inference
from diffusion_core.runtime import release_freed_memory

from .defaults import ENGINE_IDLE_S, ENGINE_STOP_S, STREAM_BUFFER
from .metrics import Metrics
from .registry import ModelEntry

log = logging.getLogger("unmask.engine")


class Overloaded(Exception):
    """The running batch and its queue are full."""


@dataclass
class EngineStats:
    forward_passes: int = 0
    rows: int = 0
    shared_passes: int = 0  # passes that served more than one request


class Ticket:
    """One request in the engine; the event loop reads its frames and result, the engine thread writes them.
    `state` belongs to the engine thread once submitted."""

    def __init__(
        self, state: Denoiser, entry: ModelEntry, loop: asyncio.AbstractEventLoop, stream: bool, metrics: Metrics
    ):
        self.state, self.entry, self.loop, self.stream, self.metrics = state, entry, loop, stream, metrics
        self.queue: asyncio.Queue[Frame | BaseException] = asyncio.Queue(maxsize=STREAM_BUFFER)
        self.cancelled = threading.Event()
        self.enqueued = time.perf_counter()
        self.started: float | None = None
        self.dropped = 0
        self.opening: dict[str, Any] | None = None  # the step-0 frame message, for streams
        self.prompt_ids: list[int] = []  # the prompt's ids, for details.prefill (decoder_input_details)
        self.result: Result | None = None  # set on the event loop with the last frame

    def cancel(self) -> None:
        """The client went away: the engine drops this request at the next step boundary."""
        self.cancelled.set()

    def deliver(self, item: Frame | BaseException, result: Result | None = None) -> None:
        """From the engine thread: a frame (the last one with the request's result) or the error that ended it."""
        if isinstance(item, Frame) and not item.done and not self.stream:
            return
        self.loop.call_soon_threadsafe(self._put, item, result)

    def _put(self, item: Frame | BaseException, result: Result | None) -> None:
        if result is not None:
            self.result = result
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            self.metrics.frames_dropped.inc()
        self.queue.put_nowait(item)

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames as they come (intermediate ones may be coalesced); the last has done=True."""
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.done:
                return

    async def final(self) -> Result:
        async for frame in self.frames():
            if frame.done and self.result is not None:
                return self.result
        raise RuntimeError("request ended without a result")

    @property
    def queue_s(self) -> float:
        return (self.started or time.perf_counter()) - self.enqueued


class Engine:
    def __init__(
        self, metrics: Metrics, max_active: int, max_queue: int, batching: bool = True, autocast: bool = False
    ):
        self.metrics = metrics
        self.max_active = max_active if batching else 1
        self.capacity = self.max_active + max_queue  # with batching off: one running, max_queue waiting
        self.autocast = autocast
        self.waiting: deque[Ticket] = deque()
        self.active: list[Ticket] = []
        self.stats = EngineStats()
        self._cond = threading.Condition()
        self._stop = False
        self._peak = False  # memory may be held since the engine last went idle
        self.outside = 0  # requests admitted through slot(), running outside the batch
        self._thread = threading.Thread(target=self._loop, name="unmask-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=ENGINE_STOP_S)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.active) + self.outside

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A place for work that runs beside the batch (the autoregressive twin): it counts toward the
        capacity, so the same limit and the same 429 apply to it."""
        with self._cond:
            if self.load >= self.capacity:
                raise Overloaded()
            self.outside += 1
        try:
            yield
        finally:
            with self._cond:
                self.outside -= 1

    def submit(self, state: Denoiser, entry: ModelEntry, stream: bool) -> Ticket:
        ticket = Ticket(state, entry, asyncio.get_running_loop(), stream, self.metrics)
        with self._cond:
            if self.load >= self.capacity:
                raise Overloaded()
            self.waiting.append(ticket)
            self.metrics.queue_depth.set(len(self.waiting))
            self._cond.notify()
        return ticket

    def _admit(self) -> list[Ticket]:
        """Under the lock: retire cancelled requests, admit waiting ones, pick this step's batch."""
        self.waiting = deque(t for t in self.waiting if not t.cancelled.is_set())
        self.active = [t for t in self.active if not t.cancelled.is_set()]
        while self.waiting and len(self.active) < self.max_active:
            ticket = self.waiting.popleft()
            ticket.started = time.perf_counter()
            self.active.append(ticket)
        self.metrics.queue_depth.set(len(self.waiting))
        self.metrics.active.set(len(self.active))
        if not self.active:
            return []
        entry = self.active[0].entry  # one model per pass; others wait their turn
        return [t for t in self.active if t.entry is entry]

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                batch = self._admit()
                while not batch and not self._stop:
                    woken = self._cond.wait(timeout=ENGINE_IDLE_S)
                    batch = self._admit()
                    if not batch and not woken and self._peak:
                        release_freed_memory()  # idle for a while: give back what the last requests' peak took
                        self._peak = False
                if self._stop:
                    return
            self._peak = True
            try:
                self._step(batch)
            except Exception as exc:
                log.exception("denoising step failed; failing its %d requests", len(batch))
                for ticket in batch:
                    ticket.deliver(exc)
                self._retire(batch)

    def _step(self, batch: list[Ticket]) -> None:
        """One shared forward pass over every row of the batch, then each request's own step on the device."""
        entry = batch[0].entry
        inputs = [t.state.request() for t in batch]
        joined = StepInputs.join(inputs, pad=batch[0].state.special.pad)
        with inference(entry.device, self.autocast):
            outputs = forward(entry.model, joined).split(inputs)
            self._count(batch, joined.input_ids.shape[0])
            finished = []
            for ticket, step, part in zip(batch, inputs, outputs):
                state = ticket.state
                state.advance(step, part)
                if not state.finished:
                    if ticket.stream:
                        ticket.deliver(state.frame())  # the one host copy of this request's step
                    continue
                result = state.result()
                ticket.deliver(state.frame(), result)
                finished.append(ticket)
                self.metrics.tokens.inc(sum(result.generated_tokens))
        self._retire(finished)

    def _count(self, batch: list[Ticket], rows: int) -> None:
        self.stats.forward_passes += 1
        self.stats.rows += rows
        self.stats.shared_passes += len(batch) > 1
        self.metrics.steps.inc()
        self.metrics.batch_rows.observe(rows)

    def _retire(self, tickets: list[Ticket]) -> None:
        if not tickets:
            return
        with self._cond:
            self.active = [t for t in self.active if t not in tickets]
            self.metrics.active.set(len(self.active))

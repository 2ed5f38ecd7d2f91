"""Timing device work without stalling it: on a GPU a lap is a pair of CUDA events, read when asked."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class Lap:
    """The duration of one piece of device work (a forward pass).

    On CUDA the host only queues the work, so a host clock would time the queueing; events
    recorded on the stream time the work itself, and reading them waits only for that work.
    """

    def __init__(self, device: torch.device) -> None:
        self._events = device.type == "cuda"
        self._start: torch.cuda.Event | float
        self._end: torch.cuda.Event | float | None = None
        if self._events:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if isinstance(self._start, torch.cuda.Event):
            self._end = torch.cuda.Event(enable_timing=True)
            self._end.record()
        else:
            self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        assert self._end is not None, "read a lap after it stopped"
        if isinstance(self._start, torch.cuda.Event) and isinstance(self._end, torch.cuda.Event):
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1000
        assert isinstance(self._start, float) and isinstance(self._end, float)
        return self._end - self._start


@contextmanager
def lap(device: torch.device) -> Iterator[Lap]:
    """`with lap(device) as l: work()`; then l.seconds."""
    timer = Lap(device)
    try:
        yield timer
    finally:
        timer.stop()

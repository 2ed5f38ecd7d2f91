"""The supervisor's restart policy on fake parts and a fake clock: the pause grows while a part keeps
dying, starts afresh after a stable run, and an API that will not stay up stops the stack."""

import re
import threading

from services.stack import supervisor
from services.stack.defaults import API_MAX_CRASHES, BACKOFF_S, STABLE_S


class Clock:
    """Monotonic seconds that pass only when the supervisor looks (one round = one second)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


class Part:
    """A child that lives for the given seconds after each start, then exits with status 3."""

    def __init__(self, name: str, clock: Clock, lives: list[float]) -> None:
        self.name, self.clock, self.lives = name, clock, list(lives)
        self.started, self.life, self.starts = clock.now, self.lives.pop(0), 0

    def exit_code(self) -> int | None:
        return 3 if self.clock.now - self.started >= self.life else None

    def start(self) -> None:
        self.starts += 1
        self.started, self.life = self.clock.now, self.lives.pop(0) if self.lives else 10**9


def _watch(monkeypatch, parts: list[Part], clock: Clock, rounds: int) -> tuple[int, list[tuple[str, str]]]:
    said: list[tuple[str, str]] = []
    monkeypatch.setattr(supervisor.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(supervisor, "WATCH_EVERY_S", 0)
    monkeypatch.setattr(supervisor, "_print", lambda name, line: said.append((name, line)))
    stopping = threading.Event()
    looks = iter(range(rounds))
    monkeypatch.setattr(stopping, "wait", lambda _: next(looks, None) is None)
    return supervisor._watch(parts, stopping), said  # type: ignore[arg-type]


def _pauses(said: list[tuple[str, str]], name: str) -> list[float]:
    return [float(m.group(1)) for who, line in said if who == name and (m := re.search(r"again in (\d+) s", line))]


def test_a_part_that_keeps_dying_waits_longer_each_time_and_a_stable_run_starts_afresh(monkeypatch):
    clock = Clock()
    quick = [1.0] * 7  # dies at once, seven times
    worker = Part("worker", clock, [*quick, STABLE_S + 10, 1.0])  # then runs past STABLE_S, then dies again
    code, said = _watch(monkeypatch, [worker], clock, rounds=2000)
    assert code == 0
    pauses = _pauses(said, "worker")
    assert pauses[: len(BACKOFF_S) + 1] == [*BACKOFF_S, BACKOFF_S[-1]], "grows, then stays at the longest"
    assert pauses[7:9] == [BACKOFF_S[0], BACKOFF_S[1]], "after a stable run the count starts afresh"
    assert worker.starts == 9


def test_an_api_that_will_not_stay_up_stops_the_stack(monkeypatch):
    clock = Clock()
    api = Part("api", clock, [1.0] * 20)
    worker = Part("worker", clock, [10**9])
    code, said = _watch(monkeypatch, [api, worker], clock, rounds=2000)
    assert code == 1 and api.starts == API_MAX_CRASHES - 1
    assert any(f"{API_MAX_CRASHES} times in a row" in line for who, line in said if who == "api")

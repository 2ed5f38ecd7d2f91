"""Hot reload: follow the current-version pointer in Redis and swap models without a restart.

The thread listens for activation events and also reads the pointer every poll, because
pub/sub drops messages while a subscriber is away (a restart, a Redis blip). A version that
fails to load is refused once and not retried until it is activated again.
"""

import json
import logging
import threading

from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError

from diffusion_core.store import BASE, EVENTS, Store

from .defaults import LOADED_POLL_S, RELOAD_STOP_S
from .metrics import Metrics
from .registry import ModelRegistry

log = logging.getLogger("unmask.reload")


class Reloader:
    def __init__(self, registry: ModelRegistry, store: Store, redis: Redis, poll_s: float, metrics: Metrics) -> None:
        self.registry, self.store, self.redis, self.poll_s, self.metrics = registry, store, redis, poll_s, metrics
        self.refused: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="unmask-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=RELOAD_STOP_S)

    def _loop(self) -> None:
        pubsub: PubSub | None = None
        down = False
        while not self._stop.is_set() and not self.registry.loaded.wait(LOADED_POLL_S):
            pass
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(EVENTS)
                message = pubsub.get_message(timeout=self.poll_s)
                if message is not None:
                    self.refused.discard(json.loads(message["data"]).get("version", ""))
                self.sync()
                if down:
                    log.info("Redis reachable again; following the checkpoint pointer")
                    down = False
            except RedisError as error:
                if not down:  # once per outage, not once per poll
                    log.warning("Redis unreachable (%s); serving %s and retrying", error, self.registry.serving)
                    down = True
                pubsub = None
                self._stop.wait(self.poll_s)
            except Exception:
                log.exception("reload loop error; serving %s", self.registry.serving)
                self._stop.wait(self.poll_s)

    def sync(self) -> None:
        """Serve what the pointer names, unless that is already served or was refused."""
        wanted = self.store.current() or BASE
        if self.registry.base is None or wanted == self.registry.serving or wanted in self.refused:
            return
        try:
            entry = self.registry.switch(wanted)
        except Exception as exc:
            self.refused.add(wanted)
            self.registry.refuse(wanted, str(exc))
            self.metrics.reloads.labels("refused").inc()
            log.error("refused checkpoint %s: %s; still serving %s", wanted, exc, self.registry.serving)
            return
        self.metrics.reloads.labels("swapped").inc()
        log.info("now serving %s (version %s)", entry.name, wanted)

"""`unmask worker`: the training worker. Registered into the `unmask` command by entry point."""

import argparse
import logging

from diffusion_core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> dict:
    p = sub.add_parser("worker", help="run fine-tune jobs from the queue (settings: REDIS_URL, UNMASK_* variables)")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if a worker of this host is registered in Redis, else 1 (a container health check)",
    )
    return {"worker": worker}


def worker(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from services.settings import settings_error, shown_url

    from .config import WorkerSettings
    from .worker import registered, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        raise settings_error(exc) from None
    try:
        if args.check:
            names = registered(settings)
            print(", ".join(names) if names else "no worker of this host is registered")
            return 0 if names else 1
        run(settings, burst=args.burst)
    except RedisConnectionError as exc:
        raise ConfigError(f"cannot reach Redis at {shown_url(settings.redis_url)}: {exc}", "REDIS_URL") from None
    return 0

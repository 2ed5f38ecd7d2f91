"""`unmask up`: the whole product on one machine. Registered into the `unmask` command by entry point."""

import argparse


def register(sub: argparse._SubParsersAction) -> dict:
    p = sub.add_parser(
        "up", help="start Redis (private unless REDIS_URL is set), the API with the viewer, and a training worker"
    )
    p.add_argument("--port", type=int, default=None, help="the API's port (overrides UNMASK_PORT; default 8000)")
    p.add_argument("--state-dir", default=None, help="state folder (overrides UNMASK_STATE_DIR; default .unmask)")
    return {"up": up}


def up(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from services.settings import settings_error

    from .config import StackSettings
    from .supervisor import up as run

    overrides = {k: v for k, v in {"port": args.port, "state_dir": args.state_dir}.items() if v is not None}
    try:
        settings = StackSettings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc) from None
    return run(settings)

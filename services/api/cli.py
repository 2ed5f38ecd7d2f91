"""`unmask serve`: the API under uvicorn. Registered into the `unmask` command by entry point."""

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> dict:
    p = sub.add_parser("serve", help="serve the HTTP / WebSocket API (settings: UNMASK_* variables)")
    p.add_argument("--host", default=None, help="where to listen (overrides UNMASK_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="the port (overrides UNMASK_PORT; default 8000)")
    p.add_argument("--model", default=None, help="checkpoint directory or hub id (overrides UNMASK_MODEL)")
    p.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16 (overrides UNMASK_DTYPE)")
    return {"serve": serve}


class _QuietProbes(logging.Filter):
    """Health probes (`unmask up`, Docker, load balancers) would drown the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 3 and args[2] in ("/health", "/ready"))


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from services.settings import check_port, settings_error

    from .config import Settings
    from .main import create_app
    from .protocol import with_head_deadline

    flags = ("host", "port", "model", "dtype")
    overrides = {name: value for name in flags if (value := getattr(args, name)) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc) from None
    check_port(settings.host, settings.port)
    print(f"unmask API on http://{settings.host}:{settings.port} (docs at /docs)", flush=True)
    # unmask's own records (the model and dtype served, hot reloads) beside uvicorn's, which keeps its own
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
    app = create_app(settings)
    http = with_head_deadline(settings.header_timeout_s)
    uvicorn.run(app, host=settings.host, port=settings.port, http=http, ws="websockets-sansio", log_level="info")
    return 0

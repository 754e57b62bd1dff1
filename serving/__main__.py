"""`python -m serving`: serve the live publication of RECFORGE_HOME over HTTP."""

import gc
import logging

import uvicorn

from serving.config import InvalidSettings, get_settings
from serving.limits import uvicorn_options
from serving.main import create_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = get_settings()
    except InvalidSettings as error:  # one line and a non-zero exit, for `recforge serve` too
        raise SystemExit(f"serve: error: {error}") from None
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(app, log_level="info", **uvicorn_options(settings, app.state.failures))


def freeze_startup_heap() -> None:
    """Take what exists at start (modules, the app and its schemas) out of the cyclic collector's walks.

    Slates queued for the impression log live long enough to reach the oldest generation, so under
    load a full collection comes every few seconds, and each walked the whole heap (130,000 objects:
    30-55 ms) while every answer waited for the GIL; the recommendations' p99 under saturation was
    that pause. What exists at start lives as long as the process, so nothing is lost by freezing it
    (after one collection, so that no garbage is frozen). Publications loaded later are collected as before.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()

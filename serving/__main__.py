"""`python -m serving`: serve the live publication of RECFORGE_HOME over HTTP."""

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
    uvicorn.run(app, log_level="info", **uvicorn_options(settings, app.state.failures))


if __name__ == "__main__":
    main()

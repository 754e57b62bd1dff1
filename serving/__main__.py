"""`python -m serving`: serve the live publication of RECFORGE_HOME over HTTP."""

import logging
import sys

import uvicorn
from pydantic import ValidationError

from serving.config import get_settings
from serving.limits import uvicorn_options
from serving.main import create_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = get_settings()
    except ValidationError as error:  # one line naming the variable and its range, not a traceback
        first = error.errors()[0]
        name = "RECFORGE_" + str(first["loc"][0]).upper() if first["loc"] else "a RECFORGE_ setting"
        sys.exit(f"recforge serve: {name}: {first['msg']} (got {first.get('input')!r})")
    uvicorn.run(create_app(settings), log_level="info", **uvicorn_options(settings))


if __name__ == "__main__":
    main()

"""The one thing pyproject.toml cannot declare: the optional C extensions.

- serving/_fastpath.c: serving's fast path;
- models/_topk.c: the per-row top-k selection publication runs over every user's scores;
- models/_capped.c: the category and seller caps' greedy order over every user's list;
- pipelines/ingest/_jsonl.c: the usual JSONL event line split into its fields before DuckDB stages it.

`optional=True`: where no C compiler is available the install still succeeds, and each has a Python
path that gives the same answer, only slower (the server writes the same bytes; top-k and the caps the
same lists; ingest the same rows).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("serving._fastpath", ["serving/_fastpath.c"], optional=True),
        Extension("models._topk", ["models/_topk.c"], extra_compile_args=["-O3"], optional=True),
        Extension("models._capped", ["models/_capped.c"], extra_compile_args=["-O3"], optional=True),
        Extension("pipelines.ingest._jsonl", ["pipelines/ingest/_jsonl.c"], extra_compile_args=["-O3"], optional=True),
    ]
)

"""Data Docs without recompiling Great Expectations' page templates at every checkpoint.

GX builds a new Jinja environment for every view it renders, so each checkpoint parsed and compiled
the same templates again: profiled on a small day's ``raw_batch`` checkpoint, template compilation
was three quarters of building its Data Docs and over a third of the whole checkpoint. A daily
ingest, and even more a 30-day backfill, paid that once per day.

Jinja's own bytecode cache fixes it without changing a page: each view's environment gets a
``FileSystemBytecodeCache`` under the home's GX folder, so a template is compiled once and every
later build, in any process (each Airflow task is one), loads it compiled. Jinja checks the
template source's checksum before using a cached entry, so a GX upgrade recompiles, and it writes
entries through a temporary file and a rename, so concurrent tasks never read half an entry.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import FileSystemBytecodeCache

_cache: FileSystemBytecodeCache | None = None  # the current home's; None until a checkpoint asks


def cache_templates(directory: Path | None) -> None:
    """Have every GX view created from now on keep its compiled templates in ``directory``
    (None: compile them each time, as GX does on its own; benchmarks/checkpoint_templates.py compares)."""
    from great_expectations.render.view.view import DefaultJinjaView

    global _cache
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    _cache = None if directory is None else FileSystemBytecodeCache(str(directory))
    if getattr(DefaultJinjaView, "_recforge_bytecode_cache", False):
        return  # installed by an earlier checkpoint of this process; only the directory changed
    original = DefaultJinjaView.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        self.env.bytecode_cache = _cache

    DefaultJinjaView.__init__ = init
    DefaultJinjaView._recforge_bytecode_cache = True

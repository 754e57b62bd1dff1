"""Reading a run's next JSONL file on a second thread while DuckDB works on the one before.

A JSONL batch is staged in two parts: its lines are read, numbered and split in Python and Arrow
(`read_jsonl`), then parsed and judged in DuckDB. A daily run spends about a tenth of its time in the
first part and, before it, as long again opening the warehouse and clearing the day; a day's file is
too small for DuckDB to use a second core. Reading the first file while the warehouse opens, and each
next file while DuckDB stages, judges and writes the current one, puts that time on the idle core
(the reader's heavy steps, file reads, Arrow kernels and the compiled split, release the GIL).

At most one file is read ahead of the one being staged, so a run holds at most two files' lines. A
file that cannot be read raises where it is taken (`take`), in the batch that stages it, as it would
without the read-ahead; a run that ends early (an error, a rollback) discards what was read ahead.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from pipelines.ingest.sources import Source, read_jsonl


class ReadAhead:
    """The JSONL files of a run, in the order it stages them, read one ahead on a thread of their own."""

    def __init__(self, source: Source, files: list[Path], max_line_bytes: int):
        self._files = [path for path in files if source.reads_lines(path)]
        self._position = {path: n for n, path in enumerate(self._files)}
        self._max_line_bytes = max_line_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read-ahead")
        self._pending: dict[Path, Future] = {}
        self._next = 0
        self._schedule_next()

    def _schedule_next(self) -> None:
        if self._next < len(self._files):
            path = self._files[self._next]
            self._pending[path] = self._executor.submit(read_jsonl, path, self._max_line_bytes)
            self._next += 1

    def take(self, path: Path) -> pa.Table | None:
        """`path`'s lines as `read_jsonl` gives them (read now if it was not read ahead), or None for a
        file that is not read line by line; starts reading the next file. Raises what reading raised."""
        if path not in self._position:
            return None
        future = self._pending.pop(path, None)
        if future is None:  # taken out of order: read it now, and go on reading after it
            future = self._executor.submit(read_jsonl, path, self._max_line_bytes)
        self._next = max(self._next, self._position[path] + 1)
        self._schedule_next()
        return future.result()

    def close(self) -> None:
        """Discard what was read ahead and not taken; wait for a read under way to end."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

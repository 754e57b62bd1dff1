"""What stops an ingest run: a batch that cannot be ingested at all (rows that can be judged are quarantined instead).

Its own module so that the stream drains (``pipelines/ingest/stream_drain.py``), which the privacy walks
call, can raise it without importing the batch machinery (and, through it, privacy again).
"""


class IngestError(RuntimeError):
    """A batch that cannot be ingested at all (as opposed to rows that are quarantined)."""

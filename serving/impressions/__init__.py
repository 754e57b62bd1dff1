"""Impressions: every slate serving returned, logged off the answer path (see log.py and format.py)."""

from __future__ import annotations

from serving.impressions.log import FileSink, ImpressionLog, RedisSink


def start_impression_log(settings, process: str, registry) -> ImpressionLog | None:
    """The server's impression log as its settings choose (None when ``impressions_sink`` is 'off'), started."""
    if settings.impressions_sink == "off":
        return None
    if settings.impressions_sink == "redis":
        sink = RedisSink(settings.impressions_redis_url, settings.impressions_redis_stream, process)
    else:
        sink = FileSink(settings.impressions_dir, process)
    impressions = ImpressionLog(
        sink,
        capacity=settings.impressions_buffer_slates,
        flush_seconds=settings.impressions_flush_seconds,
        interval_seconds=settings.impressions_interval_seconds,
        registry=registry,
    )
    impressions.start()
    return impressions

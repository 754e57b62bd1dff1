"""Serving settings: where the publications are and how often to look for a new one.

Deliberately separate from pipelines.settings so that the API host installs and imports
nothing of the pipeline stack; both read the same RECFORGE_HOME.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECFORGE_", extra="ignore")

    home: Path = Path("var")
    reload_interval_seconds: float = 2.0
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = Field(default=False, description="One log line per request (costly at high rates).")
    faiss_threads: int = Field(default=1, description="OpenMP threads per similar-items query.")
    # Requests over these get 431 (head) or 413 (body) and a closed connection (serving.limits).
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Longest request head (request line + headers)."
    )
    max_header_count: int = Field(default=100, ge=10, le=1000, description="Most headers in one request.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=100 * 1024 * 1024, description="Longest request body.")

    @property
    def published_dir(self) -> Path:
        return self.home.expanduser().resolve() / "published"


@lru_cache
def get_settings() -> ServingSettings:
    return ServingSettings()

"""The Airflow metadata DB of a home, at head and with the warehouse pool, in one process or none.

Every launcher (`recforge run`, `recforge ui`, `recforge backfill`, the DAG tests) needs the
metadata DB migrated and the warehouse pool set before Airflow starts. Doing that with the CLIs
(`airflow db migrate`, then `airflow pools set`) costs two Airflow start-ups, about 5 s of CPU on
a quiet host per launch (more under load), even when nothing changes. Here:

- a DB already at the installation's head revision with the pool as the contract says is left
  alone (read with sqlite3, no Airflow import);
- a new SQLite home gets a copy of a DB migrated once per Airflow installation (a template kept
  under ``sys.prefix``, keyed by the installed Airflow distributions, so an upgrade of Airflow
  migrates afresh); copied with SQLite's backup API and moved into place atomically;
- anything else (no template yet, an older revision, a missing or resized pool, PostgreSQL) runs
  one child process, ``python -m pipelines.runtime.airflow_db``, which migrates and sets the pool
  exactly as the two CLIs do. It is a child process because Airflow reads its configuration once,
  at import, and the caller must not import Airflow before its environment is final.

docker-compose.yml keeps the CLIs (CREATE_WAREHOUSE_POOL in airflow_home.py); both create the
pool from the same contract (pipelines/contract.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.contract import WAREHOUSE_POOL, WAREHOUSE_POOL_DESCRIPTION, WAREHOUSE_POOL_SLOTS

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(sys.prefix) / "var" / "recforge" / "airflow-metadata"
CONTRACT_POOL = (WAREHOUSE_POOL_SLOTS, WAREHOUSE_POOL_DESCRIPTION)  # the pool row's (slots, description)


class MetadataSetupFailed(RuntimeError):
    pass


def installation_key() -> str:
    """Names the installed Airflow distributions (with versions): a new one means a new head revision."""
    site = {Path(p) for p in sys.path if p.endswith("site-packages")}
    names = sorted(
        entry.name for directory in site if directory.is_dir() for entry in directory.glob("apache_airflow*.dist-info")
    )
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def template_path() -> Path:
    return PACKAGE_DIR / f"{installation_key()}.db"


def _read(db: Path) -> tuple[str | None, tuple | None]:
    """The alembic revision of a SQLite metadata DB and its warehouse pool row (None where absent)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            pool = connection.execute(
                "SELECT slots, description FROM slot_pool WHERE pool = ?", (WAREHOUSE_POOL,)
            ).fetchone()
    except sqlite3.Error:
        return None, None
    return (revision[0] if revision else None), pool


def is_ready(db: Path, head_revision: str) -> bool:
    """The DB is at `head_revision` and holds the warehouse pool as the contract says."""
    return _read(db) == (head_revision, CONTRACT_POOL)


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of `source` (SQLite's backup API), moved into place in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as reader, sqlite3.connect(scratch) as writer:
            reader.backup(writer)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)


def migrate(env: dict[str, str]) -> None:
    """Migrate the metadata DB that `env` configures and set the warehouse pool, in a child process."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.runtime.airflow_db"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise MetadataSetupFailed(
            f"migrating the Airflow metadata DB ({env.get('AIRFLOW__DATABASE__SQL_ALCHEMY_CONN')}) failed "
            f"with exit code {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )


def prepare(sqlite_db: Path, env: dict[str, str]) -> str:
    """Bring the SQLite metadata DB `sqlite_db` to head with the pool; say which way it went.

    Returns "ready" (left alone), "copied" (from the installation's template) or "migrated".
    """
    template = template_path()
    head_revision, template_pool = _read(template) if template.exists() else (None, None)
    if head_revision is not None:
        if sqlite_db.exists() and is_ready(sqlite_db, head_revision):
            return "ready"
        if not sqlite_db.exists() and template_pool == CONTRACT_POOL:
            _copy_sqlite(template, sqlite_db)
            return "copied"
    was_new = not sqlite_db.exists()
    migrate(env)
    if was_new and not template.exists():
        try:
            _copy_sqlite(sqlite_db, template)
        except (
            OSError,
            sqlite3.Error,
        ) as error:  # a read-only installation: every new home migrates, nothing else changes
            log.info("no Airflow metadata template kept at %s: %s", template, error)
    return "migrated"


def _migrate_in_this_process() -> None:
    """What `airflow db migrate` and `airflow pools set` do, under this process's environment."""
    from airflow.models.pool import Pool
    from airflow.providers_manager import ProvidersManager
    from airflow.utils.db import upgradedb

    ProvidersManager().initialize_providers_configuration()
    upgradedb()
    Pool.create_or_update_pool(WAREHOUSE_POOL, WAREHOUSE_POOL_SLOTS, WAREHOUSE_POOL_DESCRIPTION, include_deferred=False)


if __name__ == "__main__":
    _migrate_in_this_process()

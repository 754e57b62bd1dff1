"""Publish the champion's precomputed lists and item index, then make them live atomically.

A publication is a directory ``published/<version>/`` that is complete before anyone can
see it: files are written into a hidden staging directory, fsynced, the directory is
renamed into place, and only then is ``CURRENT`` replaced (write a temp file, fsync,
rename). A crash at any point leaves the live version untouched.

The contract itself (file names, manifest file table, checksum, verification) is
``serving/format.py``, which serving imports too: the writer and the reader cannot disagree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.base import Recommender
from models.columns import Columns
from models.lists.ranked import ListRules, item_vectors
from models.lists.stored import ListInputs, fallback_list, list_batches
from pipelines.publication.item_index import write_item_index
from pipelines.publication.user_recs import write_user_recs
from pipelines.reports.bias_audit import audit_publication, publication_audit_input
from pipelines.reports.index import write_index
from pipelines.settings import Settings
from pipelines.validation.checkpoints import validate_publication
from pipelines.warehouse.connection import read_frame
from serving.format import (
    CURRENT,
    FALLBACK,
    INDEX_FILE,
    ITEMS,
    MANIFEST,
    STAGING_PREFIX,
    USER_RECS,
    PublicationError,
    complete_versions,
    current_version,
    file_facts,
)
from serving.format import verify_version as verify_files
from serving.ids import ID_PATTERN, id_violation

log = logging.getLogger(__name__)

LOCK = ".publish.lock"  # the publisher's own concern, not part of what serving reads


class PublishError(RuntimeError):
    pass


def check_publishable_ids(kind: str, ids: pd.Series) -> None:
    """Refuse ids outside the id contract (serving/ids.py), naming the first one and its violation.

    Ingest quarantines such ids, so this is the backstop: a fixed-width id column sized by one
    100,000-character id, or an id the API can never be asked for, must not be published. The
    check is one vectorised match over the distinct ids.
    """
    distinct = pd.Series(ids.astype(str).unique())
    bad = distinct[~distinct.str.fullmatch(ID_PATTERN)]
    if len(bad):
        first = bad.iloc[0]
        raise PublishError(
            f"refusing to publish: {len(bad)} {kind} id(s) break the id contract {ID_PATTERN}, "
            f"e.g. {first[:140]!r} ({id_violation(first)}, {len(first)} characters)"
        )


@dataclass
class PublishResult:
    version: str
    path: Path
    users: int
    items_indexed: int

    live: bool = True  # False: a challenger's publication, complete but not CURRENT

    def summary(self) -> str:
        state = "" if self.live else " (not live: name it in an experiment to serve it)"
        return f"published {self.version}{state}: {self.users} users, {self.items_indexed} items indexed -> {self.path}"


def list_workers(settings: Settings) -> int:
    """`publish_workers`, or one per core this process may run on (its CPU affinity, where the OS has one)."""
    if settings.publish_workers is not None:
        return settings.publish_workers
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(usable))


def load_champion(settings: Settings) -> tuple[Recommender, dict]:
    """Download the model behind the `champion` alias and load it; also return its registry facts."""
    from pipelines.training.tracking import CHAMPION

    return load_registered(settings, alias=CHAMPION)


def load_registered(
    settings: Settings, alias: str | None = None, number: str | None = None
) -> tuple[Recommender, dict]:
    """Download the registered model version behind `alias` (or numbered `number`) and load it, with its facts."""
    import mlflow

    from pipelines.training.tracking import configure, version_by_alias

    client = configure(settings)
    name = settings.registered_model_name
    if number is not None:
        try:
            version = client.get_model_version(name, str(number))
        except Exception:  # MLflow raises its own RestException or MlflowException
            version = None
        if version is None:
            raise PublishError(f"registered model {name!r} has no version {number}")
        uri, label = f"models:/{name}/{version.version}", f"version-v{version.version}"
    else:
        version = version_by_alias(client, name, alias)
        if version is None:
            raise PublishError(f"registered model {name!r} has no '{alias}' alias")
        uri, label = f"models:/{name}@{alias}", f"{alias}-v{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(settings.models_dir / label)))
    model = Recommender.load(local / "artifacts" / "bundle")
    facts = {
        "registered_model": settings.registered_model_name,
        "version": str(version.version),
        "run_id": version.run_id,
        "algorithm": model.name,
        "data_snapshot": client.get_run(version.run_id).data.tags.get("data_snapshot"),
    }
    return model, facts


def read_items(settings: Settings) -> pd.DataFrame:
    """The catalog's items (``marts.item_features`` rows it lists): what the lists and items.parquet need."""
    return read_frame(
        settings,
        "select item_id, title, category, seller, price, in_stock, is_blocked from marts.item_features "
        "where in_catalog order by item_id",
    )


def read_purchases(settings: Settings) -> pd.DataFrame:
    """(user_id, item_id) pairs the user bought or rated (``marts.interactions``): never to be recommended back."""
    return read_frame(
        settings, "select user_id, item_id from marts.interactions where n_purchases > 0 or n_ratings > 0"
    )


def read_consent_withheld(settings: Settings) -> set[str]:
    """Users whose latest consent signal withholds personalisation (``marts.consent_withheld_users``).

    Their events are in no mart, so a model trained since has no row for them; a champion trained
    before they withheld it still has one, so their lists are dropped here too: serving then answers
    them with the fallback, as any user the publication does not know.
    """
    frame = read_frame(settings, "select user_id from marts.consent_withheld_users")
    return set(frame["user_id"].astype(str))


def publish(settings: Settings, alias: str | None = None, number: str | None = None) -> PublishResult:
    """Score the champion for every known user and make the result the live publication.

    Users are scored `publish_batch_users` at a time, in the order of their ids, and each batch is
    appended to the lists file in staging at once: memory is bounded by one batch, and the file comes
    out sorted by user then rank (serving finds each user's run of rows without re-sorting).

    Another registry version (`alias`, e.g. ``challenger``, or `number`) is published the same way,
    checked by the same suite, but never made live: it is what an experiment's variant names
    (``recforge experiments start`` finds the newest complete publication of that version).
    """
    from pipelines.training.tracking import CHAMPION

    live = number is None and alias in (None, CHAMPION)
    model, facts = load_champion(settings) if live else load_registered(settings, alias, number)
    items = read_items(settings)
    purchased = read_purchases(settings)
    rules = ListRules.from_settings(settings)
    check_publishable_ids("user", pd.Series(model.user_ids))
    check_publishable_ids("item", pd.Series(model.item_ids))
    inputs = ListInputs.of(model, items, purchased)
    fallback = fallback_list(model, inputs.allowed, inputs.categories, rules)
    withheld = read_consent_withheld(settings)
    withheld_users = np.isin(model.user_ids.astype(str), np.array(sorted(withheld), dtype=str))
    indexed = pd.DataFrame({Columns.Item: model.item_ids.astype(str)}).merge(items, on=Columns.Item, how="left")
    indexed["index_row"] = np.arange(len(indexed), dtype=np.int32)
    # The item's row in items.parquet / the index, beside its id: serving reads 4 bytes per row
    # instead of decoding 100M id strings. One lookup per model item, then an integer take per row.
    item_rows = pd.Index(indexed[Columns.Item]).get_indexer(model.item_ids.astype(str)).astype(np.int32)

    root = settings.published_dir
    root.mkdir(parents=True, exist_ok=True)
    # The lock is held while scoring too: the lists are written straight into staging.
    with publish_lock(root):
        remove_stale_staging(root)
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-v{facts['version']}"
        with staged_version(root, version) as staging:
            # Staging is invisible to serving; the publication suite then runs as SQL over the file,
            # and a critical failure raises here, before anything can go live.
            lists = write_user_recs(
                staging / USER_RECS,
                list_batches(model, rules, inputs, settings.publish_batch_users, list_workers(settings)),
                model.user_ids,
                model.item_ids,
                item_rows,
                withheld_users,
                settings.eval_k,
            )
            if lists.consent_dropped_rows:
                log.info(
                    "consent: %d user(s) withheld it: their lists (%d rows) are left out",
                    len(withheld), lists.consent_dropped_rows,
                )  # fmt: skip
            # Audited before the version is sealed: a publication whose audit cannot be made does not go live.
            audit = publication_audit_input(model, items, lists.recommended, settings)
            validate_publication(settings, staging / USER_RECS, items, purchased, version)
            pq.write_table(pa.Table.from_pandas(fallback, preserve_index=False), staging / FALLBACK)
            pq.write_table(pa.Table.from_pandas(indexed, preserve_index=False), staging / ITEMS)
            index_spec = write_item_index(item_vectors(model), staging / INDEX_FILE, settings)
            manifest = {
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "model": facts,
                "published_live": live,  # False: a challenger's, for an experiment (rollback skips it)
                "data_snapshot": facts["data_snapshot"],
                "top_n": settings.publish_top_n,
                "rules": rules.manifest(),
                "category_cap": settings.category_cap,
                "item_index": index_spec,
                "counts": {
                    "users": lists.users,
                    "user_rows": lists.rows,
                    "fallback_items": len(fallback),
                    "consent_withheld_users": len(withheld),
                    "indexed_items": len(indexed),
                    "reasons": lists.reasons,
                },
                "files": file_facts(staging),
            }
            seal_version(staging, manifest)
        final = root / version
        if live:
            switch_current(root, version)
        # the newest versions are kept, so a challenger's stays until an experiment that names it spares it
        prune_versions(root, settings.publish_keep_versions, spared=experiment_versions(settings))
    audit_publication(settings, audit, facts, version, manifest["rules"]["applied"])
    write_index(settings)
    result = PublishResult(version, final, manifest["counts"]["users"], len(indexed), live)
    log.info(result.summary())
    return result


@contextmanager
def staged_version(root: Path, version: str) -> Iterator[Path]:
    """A hidden staging directory for ``version`` (hold ``publish_lock``): renamed into place and the rename
    fsynced when the block ends, removed when it raises, so a version is complete or absent."""
    staging = root / f"{STAGING_PREFIX}{version}"
    staging.mkdir()
    try:
        yield staging
        os.rename(staging, root / version)
        _fsync(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def seal_version(staging: Path, manifest: dict) -> None:
    """Write the manifest last and fsync everything, so a renamed version is complete on disk."""
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for path in staging.iterdir():
        _fsync(path)
    _fsync(staging)


@contextmanager
def publish_lock(root: Path) -> Iterator[None]:
    """One publisher (or rollback) at a time; the kernel drops the lock if the holder dies."""
    with open(root / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublishError(f"another publish or rollback holds {root / LOCK}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_staging(root: Path) -> list[str]:
    """Delete staging directories a killed publish left behind (safe: we hold the publish lock)."""
    stale = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(STAGING_PREFIX))
    for name in stale:
        log.warning("removing %s left by an interrupted publish", root / name)
        shutil.rmtree(root / name)
    return stale


def versions(root: Path) -> list[str]:
    """Complete versions, oldest first (the publication contract's listing)."""
    return complete_versions(root)


def verify_version(directory: Path) -> dict:
    """The version's manifest, after the same verification serving applies before it loads a version."""
    try:
        return verify_files(directory)
    except PublicationError as error:
        raise PublishError(str(error)) from None


def rollback(settings: Settings, to: str | None = None) -> str:
    """Make the complete version before the live one (or `to`) live again, through the same atomic switch.

    The target is verified against its manifest first, so a rollback never points serving at a
    damaged version. Newer versions are kept (a later rollback with `to` can return to them).
    """
    root = settings.published_dir
    if not root.exists():
        raise PublishError(f"nothing to roll back: {root} does not exist")
    with publish_lock(root):
        live = current_version(root)
        available = versions(root)
        if to is None:
            if live is None:
                raise PublishError(f"nothing to roll back: {root / CURRENT} does not exist")
            # a challenger's publication (made for an experiment, never live) is no earlier live state
            older = [v for v in available if v < live and _published_live(root / v)]
            if not older:
                raise PublishError(f"no complete champion version older than the live {live} in {root}")
            to = older[-1]
        elif to not in available:
            raise PublishError(f"version {to!r} is not a complete version in {root} (have: {', '.join(available)})")
        if to == live:
            raise PublishError(f"{to} is already live")
        verify_version(root / to)
        switch_current(root, to)
    log.info("rolled back from %s to %s", live, to)
    return to


def _published_live(directory: Path) -> bool:
    """Whether a version was published as the champion (manifests before ``published_live`` were all)."""
    try:
        return json.loads((directory / MANIFEST).read_text()).get("published_live", True) is not False
    except (OSError, ValueError):
        return False


def switch_current(root: Path, version: str) -> None:
    """Point CURRENT at a complete version: write a temp file, fsync it, rename over CURRENT."""
    if not (root / version / MANIFEST).exists():
        raise PublishError(f"refusing to make {version} live: {root / version / MANIFEST} is missing")
    tmp = root / f".{CURRENT}.tmp"
    with open(tmp, "w") as handle:
        handle.write(version + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / CURRENT)
    _fsync(root)


def experiment_versions(settings: Settings) -> set[str]:
    """Publication versions a running experiment names (serving loads them beside CURRENT, also after a restart).

    An unreadable state spares nothing here: serving reports it, and publishing must not fail for it."""
    from serving.experiments import RUNNING, STATE_FILE, ExperimentStateError, read_state_file

    try:
        state = read_state_file(settings.home / STATE_FILE)
    except ExperimentStateError as error:
        log.warning("publish: %s: pruning spares no experiment's version", error)
        return set()
    return {
        version
        for entry in state.values()
        if entry.get("status") == RUNNING and isinstance(entry.get("publications"), dict)
        for version in entry["publications"].values()
        if isinstance(version, str)
    }


def prune_versions(root: Path, keep: int, spared: set[str] = frozenset()) -> list[str]:
    """Delete all but the newest `keep` complete versions; never the live one nor a `spared` one."""
    live = current_version(root)
    complete = versions(root)
    doomed = [v for v in complete[:-keep] if v != live and v not in spared] if keep > 0 else []
    for version in doomed:
        shutil.rmtree(root / version)
    return doomed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Redaction:
    """What removing users did to the publications: the new live version and every version rewritten."""

    live_version: str | None  # the new version without the users, made live (None: nothing was published)
    rows_removed: int  # list rows removed, over every version
    versions_rewritten: list[str]


def publish_without_users(settings: Settings, user_ids: list[str], request_id: str) -> Redaction:
    """Make a version of the live publication without these users live, and rewrite every older kept version.

    Why derive rather than re-score: the lists of everyone else are the ones validated and published
    (the model and the data they came from are unchanged but for the forgotten users), and the new
    version is ready in the time of one Parquet filter. Its manifest says what it was derived from and
    for which request (never the ids). Older kept versions are rewritten the same way, atomically
    (a complete copy renamed into place), so a rollback can never bring a forgotten user back.
    A re-run finds nothing left to remove and changes nothing (idempotent).
    """
    root = settings.published_dir
    live = current_version(root)
    if live is None:
        return Redaction(None, 0, [])
    removed, rewritten = 0, []
    with publish_lock(root):
        remove_stale_staging(root)
        for leftover in root.glob(f"{REPLACED_PREFIX}*"):  # a rewrite that died after its swap began
            shutil.rmtree(leftover)
        live_rows = _user_rows(root / live, user_ids)
        new_live = live
        if live_rows:
            new_live = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-v{read_manifest_model_version(root / live)}"
            staging = root / f"{STAGING_PREFIX}{new_live}"
            try:
                _copy_without_users(root / live, staging, user_ids, new_live, request_id, derived_from=live)
                os.rename(staging, root / new_live)
                _fsync(root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            switch_current(root, new_live)
            removed += live_rows
            log.info("forget %s: %s is live, derived from %s without %d list rows", request_id, new_live, live,
                     live_rows)  # fmt: skip
        for version in versions(root):
            if version == new_live:
                continue
            rows = _user_rows(root / version, user_ids)
            if rows:
                _rewrite_in_place(root, version, user_ids, request_id)
                removed += rows
                rewritten.append(version)
    return Redaction(new_live, removed, rewritten)


REPLACED_PREFIX = ".replaced-"  # a version's old copy between the two renames of its rewrite


def read_manifest_model_version(directory: Path) -> str:
    return str(verify_version(directory)["model"]["version"])


def _user_rows(directory: Path, user_ids: list[str]) -> int:
    import pyarrow.compute as pc

    users = pq.read_table(directory / USER_RECS, columns=[Columns.User]).column(Columns.User)
    return int(pc.sum(pc.is_in(users, value_set=pa.array(user_ids, type=pa.string()))).as_py() or 0)


def _copy_without_users(
    source: Path, target: Path, user_ids: list[str], version: str, request_id: str, derived_from: str | None
) -> None:
    """A complete, sealed copy of version `source` without the users' rows, named `version`."""
    import pyarrow.compute as pc

    manifest = verify_version(source)
    target.mkdir()
    recs = pq.read_table(source / USER_RECS)
    kept = recs.filter(pc.invert(pc.is_in(recs.column(Columns.User), value_set=pa.array(user_ids, type=pa.string()))))
    pq.write_table(kept, target / USER_RECS)
    for name in manifest["files"]:
        if name not in (USER_RECS, MANIFEST):
            shutil.copy2(source / name, target / name)
    users = pc.count_distinct(kept.column(Columns.User)).as_py()
    forgotten = {"request_id": request_id, "users_removed": manifest["counts"]["users"] - users}
    manifest = {
        **manifest,
        "version": version,
        "counts": {**manifest["counts"], "users": users, "user_rows": kept.num_rows},
        "forget_requests": [*manifest.get("forget_requests", []), forgotten],
        "files": file_facts(target),
    }
    if derived_from is not None:
        manifest["created_at"] = datetime.now(UTC).isoformat()
        manifest["derived_from"] = derived_from
    seal_version(target, manifest)


def _rewrite_in_place(root: Path, version: str, user_ids: list[str], request_id: str) -> None:
    """Replace a kept version by its copy without the users: copy sealed beside it, then two renames."""
    staging = root / f"{STAGING_PREFIX}{version}"
    replaced = root / f"{REPLACED_PREFIX}{version}"
    try:
        _copy_without_users(root / version, staging, user_ids, version, request_id, derived_from=None)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.rename(root / version, replaced)
    os.rename(staging, root / version)
    _fsync(root)
    shutil.rmtree(replaced)

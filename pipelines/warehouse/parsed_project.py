"""dbt's parse of the project, kept (in the process and in the home) and handed to every later dbt command
that would parse the same thing.

dbt parses the whole project again (about 5 s of CPU for this one) whenever the parse it saved beside a
warehouse was made with another profile, and the profile names the warehouse's file: every new or copied
home parsed from scratch. What dbt parses (the nodes, their configs, relations and SQL before compilation)
depends on the project's files, the vars given on the command line and the target's connection settings
(adapter, database, schema), not on where the file lies or where dbt writes its logs and artifacts. So a
process that builds several warehouses (a test worker; the demo A/B, which builds a scratch copy beside the
home) parses each distinct project once; dbt's documented way to reuse a parse is ``dbtRunner(manifest=...)``.
The parse is also written under the home (``dbt/parses/<key>.msgpack``, dbt's own serialisation of its
manifest, as in its partial-parse file), so a copied or moved home, and every new process on it, loads it
in a fraction of a second instead of parsing (a test suite copies prepared homes hundreds of times).

A miss runs ``dbt parse`` first (dbt's own partial parsing still applies, and it leaves the saved parse
beside the warehouse as before), then the command with that parse. The key holds every project file's
bytes, the vars, the target's settings and the versions of dbt and its adapters: any change parses anew.
A kept file that cannot be read is parsed again, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# dbt's own output folders, should someone run dbt by hand inside the project.
NOT_PROJECT_SOURCES = frozenset({"target", "logs", "dbt_packages"})
# A parse of this project holds a few MB in memory, about 1 MB on disk; a process or a home rarely needs more
# than two (vars from settings, and dbt_project.yml's defaults in some tests).
KEPT_PARSES = 4
# dbt's parse includes its adapters' macros: a new version of any of these is a new parse.
DBT_DISTRIBUTIONS = ("dbt-core", "dbt-adapters", "dbt-duckdb", "dbt-postgres")

_parses: OrderedDict[str, object] = OrderedDict()


def parse_key(project: Path, args: list[str], parse_environment: dict[str, str]) -> str:
    """What the parse depends on: every project file's path and bytes, the command's ``--vars``, and the
    part of the environment profiles.yml reads that is not a location (transform.dbt_parse_environment)."""
    digest = hashlib.sha256(f"{project.resolve()}\0{dbt_versions()}\0{project_files_digest(project)}".encode())
    for name in sorted(parse_environment):
        digest.update(f"\0{name}={parse_environment[name]}".encode())
    digest.update(f"\0{vars_args(args)}".encode())
    return digest.hexdigest()


def project_files_digest(project: Path) -> str:
    """Every project file's path (in the project) and bytes: what dbt would compile, not where it lies."""
    digest = hashlib.sha256()
    sources = (
        path
        for path in project.rglob("*")
        if path.is_file() and path.relative_to(project).parts[0] not in NOT_PROJECT_SOURCES
    )
    for path in sorted(sources):
        digest.update(f"{path.relative_to(project)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def vars_args(args: list[str]) -> list[str]:
    """The command's ``--vars`` and its value, or nothing: what a parse of it must be given too."""
    return args[args.index("--vars") : args.index("--vars") + 2] if "--vars" in args else []


@functools.cache  # installed packages do not change under a running process: read their metadata once
def dbt_versions() -> str:
    versions = []
    for name in DBT_DISTRIBUTIONS:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} absent")
    return ",".join(versions)


def project_args(project: Path) -> list[str]:
    return ["--project-dir", str(project), "--profiles-dir", str(project)]


def invoke_dbt(project: Path, args: list[str], parses_dir: Path, parse_environment: dict[str, str]):
    """``dbtRunner().invoke(args)`` on `project`, with the parse this process or `parses_dir` already holds for
    the same key.

    The environment profiles.yml reads must already be in ``os.environ`` (dbt reads it there);
    `parse_environment`, the part of it a parse depends on, forms the key."""
    from dbt.cli.main import dbtRunner

    key = parse_key(project, args, parse_environment)
    kept = parses_dir / f"{key}.msgpack"
    manifest = _parses.get(key)
    # Written for this home's copies and later processes: a new parse always, one from memory if the home has none.
    write = manifest is not None and not kept.exists()
    if manifest is None:
        manifest = load_parse(kept)
    if manifest is None:
        parsed = dbtRunner().invoke(["parse", *vars_args(args), *project_args(project)])
        if not parsed.success or parsed.result is None:
            return parsed  # the command would fail to parse alike: the caller reports dbt's own error
        manifest, write = parsed.result, True
    if write:
        save_parse(parses_dir, key, manifest)
    _parses[key] = manifest
    _parses.move_to_end(key)
    while len(_parses) > KEPT_PARSES:
        _parses.popitem(last=False)
    return dbtRunner(manifest=manifest).invoke([*args, *project_args(project)])


def load_parse(path: Path):
    """The manifest kept in `path`, ready for dbtRunner; None when there is none or it cannot be read."""
    if not path.exists():
        return None
    from dbt.contracts.graph.manifest import Manifest
    from dbt.parser.manifest import extended_mashumuro_decoder

    try:
        manifest = Manifest.from_msgpack(path.read_bytes(), decoder=extended_mashumuro_decoder)
    except Exception as error:  # a damaged or foreign file: parse again, as dbt does with its own
        log.warning("dbt's kept parse %s could not be read (%s): parsing the project again", path, error)
        return None
    manifest.build_flat_graph()  # the `graph` macros read, as after dbt's own parse
    return manifest


def save_parse(parses_dir: Path, key: str, manifest) -> None:
    """Write the parse under its key (atomically: a reader sees the whole file or none), keeping the newest few."""
    from dbt.parser.manifest import extended_mashumaro_encoder

    parses_dir.mkdir(parents=True, exist_ok=True)
    partial = parses_dir / f".{key}.{os.getpid()}.partial"
    partial.write_bytes(manifest.to_msgpack(extended_mashumaro_encoder))
    os.replace(partial, parses_dir / f"{key}.msgpack")
    kept = sorted(parses_dir.glob("*.msgpack"), key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in kept[KEPT_PARSES:]:
        stale.unlink(missing_ok=True)


def forget_parses() -> None:
    """Drop every kept parse (tests that count parses start from none)."""
    _parses.clear()

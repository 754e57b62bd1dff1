"""dbt's parse of the project, kept for the life of the process and handed to every later dbt command that
would parse the same thing.

dbt parses the whole project again (about 5 s of CPU for this one) whenever the parse it saved beside a
warehouse was made with another profile, and the profile names the warehouse's file: every new or copied
home parsed from scratch. What dbt parses (the nodes, their configs, relations and SQL before compilation)
depends on the project's files, the vars given on the command line and the target's connection settings
(adapter, database, schema), not on where the file lies or where dbt writes its logs and artifacts. So a
process that builds several warehouses (a test worker; the demo A/B, which builds a scratch copy beside the
home) parses each distinct project once; dbt's documented way to reuse a parse is ``dbtRunner(manifest=...)``.

A miss runs ``dbt parse`` first (dbt's own partial parsing still applies, and it leaves the saved parse
beside the warehouse as before), then the command with that parse.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

# Where a warehouse lies and where dbt writes its logs and artifacts: what differs between two homes
# without changing what dbt parses.
LOCATION_VARIABLES = frozenset(
    {
        "RECFORGE_WAREHOUSE",
        "RECFORGE_WAREHOUSE_INSTANCE",
        "RECFORGE_WAREHOUSE_TEMP_DIRECTORY",
        "DBT_LOG_PATH",
        "DBT_TARGET_PATH",
    }
)
# dbt's own output folders, should someone run dbt by hand inside the project.
NOT_PROJECT_SOURCES = frozenset({"target", "logs", "dbt_packages"})
# A parse of this project holds a few MB; a process rarely needs more than two (vars from settings, and
# dbt_project.yml's defaults in some tests).
KEPT_PARSES = 4

_parses: OrderedDict[str, object] = OrderedDict()


def parse_key(project: Path, environment: dict[str, str], args: list[str]) -> str:
    """What the parse depends on: every project file's path and bytes, the command's ``--vars``, and the
    environment profiles.yml reads except the location variables."""
    digest = hashlib.sha256()
    sources = (
        path
        for path in project.rglob("*")
        if path.is_file() and path.relative_to(project).parts[0] not in NOT_PROJECT_SOURCES
    )
    for path in sorted(sources):
        digest.update(f"{path.relative_to(project)}\0".encode())
        digest.update(path.read_bytes())
    for name in sorted(set(environment) - LOCATION_VARIABLES):
        digest.update(f"\0{name}={environment[name]}".encode())
    cli_vars = args[args.index("--vars") + 1] if "--vars" in args else ""
    digest.update(f"\0--vars={cli_vars}".encode())
    return digest.hexdigest()


def project_args(project: Path) -> list[str]:
    return ["--project-dir", str(project), "--profiles-dir", str(project)]


def invoke_dbt(project: Path, environment: dict[str, str], args: list[str]):
    """``dbtRunner().invoke(args)`` on `project`, with the parse this process already made for the same key.

    `environment` must already be in ``os.environ`` (dbt reads it there); it is passed to form the key."""
    from dbt.cli.main import dbtRunner

    key = parse_key(project, environment, args)
    manifest = _parses.get(key)
    if manifest is None:
        cli_vars = ["--vars", args[args.index("--vars") + 1]] if "--vars" in args else []
        parsed = dbtRunner().invoke(["parse", *cli_vars, *project_args(project)])
        if not parsed.success or parsed.result is None:
            return parsed  # the command would fail to parse alike: the caller reports dbt's own error
        manifest = parsed.result
        _parses[key] = manifest
        while len(_parses) > KEPT_PARSES:
            _parses.popitem(last=False)
    _parses.move_to_end(key)
    return dbtRunner(manifest=manifest).invoke([*args, *project_args(project)])


def forget_parses() -> None:
    """Drop every kept parse (tests that count parses start from none)."""
    _parses.clear()

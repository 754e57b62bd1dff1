"""Author the Great Expectations suites, validation definitions and checkpoints of recforge.

The JSON files next to this script are what runs and what reviewers read; this script is how
they are written. Change a suite here, run ``.venv/bin/python expectations/define_suites.py``,
and commit the regenerated files together with the change.

Each checkpoint guards one point of the pipeline, and each of its validation definitions applies
one suite to one data frame that pipelines/validation/checkpoints.py builds. Every expectation carries a
severity: ``critical`` stops the run, ``warning`` is reported and the run goes on. Thresholds that
live in settings arrive as ``$PARAMETER`` values at run time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the repository root holds the shared contract
from pipelines.contract import EVENT_TYPES  # noqa: E402

CRITICAL, WARNING = "critical", "warning"


def param(name: str) -> dict:
    return {"$PARAMETER": name}


# checkpoint -> validation definition (= data asset = suite name) -> expectations
CHECKPOINTS: dict[str, dict[str, list]] = {
    "raw_batch": {
        "raw_events": [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=1, severity=CRITICAL, meta={"why": "an empty day means the feed broke"}
            ),
            gxe.ExpectColumnValuesToNotBeNull(column="event_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToBeUnique(column="event_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id", severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES), severity=CRITICAL),
            gxe.ExpectColumnValuesToBeBetween(
                column="event_ts",
                min_value=param("min_event_ts"),
                max_value=param("max_event_ts"),
                severity=CRITICAL,
                meta={"why": "within the interval, allowing late arrivals, and never in the future"},
            ),
            gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, severity=WARNING),
            gxe.ExpectColumnValuesToNotBeNull(column="session_id", mostly=0.95, severity=WARNING),
        ],
        "raw_batch_quality": [
            gxe.ExpectColumnValuesToBeBetween(
                column="duplicate_share",
                min_value=0,
                max_value=param("max_duplicate_share"),
                severity=CRITICAL,
                meta={"why": "a producer retrying in a loop; dedup copes, but the feed needs fixing"},
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="bot_share",
                min_value=0,
                max_value=param("max_bot_share"),
                severity=WARNING,
                meta={"why": "a scraper wave: the rows are quarantined, analysts should know"},
            ),
        ],
    },
    "marts": {
        # One row per user of marts.interactions (pipelines/validation/sql/marts_interaction_users.sql).
        "marts_interactions": [
            gxe.ExpectColumnSumToBeBetween(
                column="n_rows",
                min_value=param("min_rows"),
                max_value=param("max_rows"),
                severity=CRITICAL,
                meta={"why": "the mart's row count, within the band around the previous run's"},
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="min_weight", min_value=0, strict_min=True, severity=CRITICAL, meta={"why": "every weight > 0"}
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="min_n_events", min_value=1, severity=CRITICAL, meta={"why": "every interaction has an event"}
            ),
            gxe.ExpectColumnValuesToBeInSet(
                column="repeated_items",
                value_set=[0],
                severity=CRITICAL,
                meta={"why": "one row per user and item: the mart's grain"},
            ),
        ],
        "marts_splits": [
            gxe.ExpectColumnDistinctValuesToEqualSet(
                column="split",
                value_set=["train", "valid", "test"],
                severity=CRITICAL,
                meta={"why": "every split exists"},
            ),
            gxe.ExpectColumnValuesToBeBetween(column="n_rows", min_value=1, severity=CRITICAL),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="next_first_ts",
                column_B="last_ts",
                or_equal=False,
                ignore_row_if="either_value_is_missing",
                severity=CRITICAL,
                meta={"why": "each split ends before the next begins: no look-ahead"},
            ),
        ],
        "item_coverage": [
            gxe.ExpectColumnValuesToNotBeNull(column="category", mostly=0.95, severity=WARNING),
            gxe.ExpectColumnValuesToNotBeNull(column="price", mostly=0.95, severity=WARNING),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, severity=WARNING),
        ],
    },
    "publication": {
        "publication_lists": [
            gxe.ExpectColumnValuesToBeInSet(column="is_blocked", value_set=[False], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="in_stock", value_set=[True], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(column="already_purchased", value_set=[False], severity=CRITICAL),
            gxe.ExpectColumnValuesToBeInSet(
                column="repeats_an_item",
                value_set=[False],
                severity=CRITICAL,
                meta={"why": "(user, item) is unique: no list holds an item twice"},
            ),
        ],
        "publication_users": [
            gxe.ExpectColumnValuesToBeBetween(
                column="n_items",
                min_value=param("min_items"),
                max_value=param("max_items"),
                severity=CRITICAL,
                meta={"why": "every user can be served k distinct items"},
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="max_category_share_head",
                max_value=param("category_cap"),
                severity=CRITICAL,
                meta={"why": "no category above its cap in what users see first"},
            ),
        ],
    },
}


def define(root: Path) -> None:
    context = gx.get_context(mode="file", project_root_dir=str(root))
    source = context.data_sources.add_pandas("recforge_frames")
    for checkpoint_name, definitions in CHECKPOINTS.items():
        validation_definitions = []
        for name, expectations in definitions.items():
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("batch")
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            validation_definitions.append(
                context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            )
        context.checkpoints.add(
            gx.Checkpoint(
                name=checkpoint_name,
                validation_definitions=validation_definitions,
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            )
        )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        define(Path(tmp))
        generated = Path(tmp) / "gx"
        for folder in ("expectations", "validation_definitions", "checkpoints"):
            shutil.rmtree(HERE / folder, ignore_errors=True)
            shutil.copytree(generated / folder, HERE / folder, ignore=shutil.ignore_patterns(".ge_store_backend_id"))
        sources = (generated / "great_expectations.yml").read_text().split("fluent_datasources:", 1)[1]
        sources = "fluent_datasources:" + sources.split("\nanalytics_enabled:", 1)[0].split("\ndata_context_id:", 1)[0]
        config = (HERE / "great_expectations.yml").read_text().split("fluent_datasources:", 1)[0]
        (HERE / "great_expectations.yml").write_text(config + sources.rstrip() + "\n")
    print(f"wrote {sum(len(d) for d in CHECKPOINTS.values())} suites in {len(CHECKPOINTS)} checkpoints to {HERE}")


if __name__ == "__main__":
    main()

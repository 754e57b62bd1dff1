"""benchmarks/dbt_daily.py's variants: what a user types is read as settings and what-ifs, or refused by name.
The builds it times are the transform stage's, covered by tests/warehouse at a tiny size."""

import pytest

from tests.conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("dbt_daily")


def test_a_variant_is_a_name_then_settings_and_what_ifs(bench):
    assert bench.parse_variant("current=") == ("current", {})
    assert bench.parse_variant("mem=RECFORGE_WAREHOUSE_MEMORY_LIMIT=8GB,row_group_size=122880,dbt_project=/p") == (
        "mem",
        {"RECFORGE_WAREHOUSE_MEMORY_LIMIT": "8GB", "BENCH_ROW_GROUP_SIZE": "122880", "BENCH_DBT_PROJECT": "/p"},
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [("=RECFORGE_X=1", "'=RECFORGE_X=1'"), ("v=threads=4", "'threads=4'"), ("v=RECFORGE_X", "'RECFORGE_X'")],
)
def test_a_variant_that_is_not_one_is_refused_naming_the_part(bench, text, named):
    with pytest.raises(SystemExit, match=named):
        bench.parse_variant(text)

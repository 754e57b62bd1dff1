"""The scale benchmark's own measurement (benchmarks/pipeline_scale.py); its stages are the
pipeline's, each covered by its stage's tests at a tiny size."""

import os
import sys

import pytest

from tests.conftest import benchmark_script


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("pipeline_scale")


GRANDCHILD_HOLDS_200_MIB = """
import subprocess, sys
subprocess.run([sys.executable, "-c", "import time; block = bytearray(200 * 2**20); time.sleep(1.0)"], check=True)
print("done")
"""


def test_peak_memory_counts_the_whole_process_tree(bench):
    code, seconds, peak, output = bench.run_measured([sys.executable, "-c", GRANDCHILD_HOLDS_200_MIB], dict(os.environ))
    assert code == 0 and output.strip() == "done"
    assert peak >= 200 * 2**20  # held by the grandchild, not by the process the benchmark started
    assert seconds >= 1.0


def test_a_failing_stage_returns_its_exit_code(bench):
    code, _, _, _ = bench.run_measured([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    assert code == 3


def test_a_home_the_benchmark_did_not_make_is_never_cleared(bench, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not made by this benchmark"):
        bench.clear_home(tmp_path, keep_landing=False)
    assert (tmp_path / "precious.txt").exists()


def test_a_kept_log_survives_clearing_and_everything_else_goes(bench, tmp_path):
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "simulation.json").write_text("{}")
    (tmp_path / "warehouse.duckdb").write_text("old")
    (tmp_path / "published").mkdir()
    bench.clear_home(tmp_path, keep_landing=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landing"]


def test_the_large_size_is_the_issues_target(bench):
    large = bench.SIZES["large"]
    assert large["sim_users"] == 1_000_000 and large["sim_items"] == 100_000
    # ~3.2 landing lines per user and day (the 1M-event log: 1,143,237 lines from 20k users x 18 days)
    assert large["sim_users"] * large["sim_days"] * 3.2 >= 50_000_000


def test_the_daily_increment_alone_needs_the_full_runs_home(bench, tmp_path):
    """`--daily-only` re-runs the last day on a warehouse the full run left; on any other home it stops first."""
    import subprocess

    run = subprocess.run(
        [sys.executable, bench.__file__, "tiny", "--home", str(tmp_path), "--daily-only"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"--daily-only needs the full run's home: {tmp_path} has no pipeline_scale.json" in run.stderr
    assert list(tmp_path.iterdir()) == []  # nothing simulated, nothing cleared


@pytest.mark.parametrize("other", [["--stop-after", "train"], ["--generate-only"]])
def test_the_daily_increment_alone_cannot_be_combined_with_another_part_of_the_run(bench, tmp_path, other):
    """Together they would run nothing and write an empty report: argparse refuses before anything happens."""
    import subprocess

    run = subprocess.run(
        [sys.executable, bench.__file__, "tiny", "--home", str(tmp_path), "--daily-only", *other],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert f"argument {other[0]}: not allowed with argument --daily-only" in run.stderr
    assert list(tmp_path.iterdir()) == []


def fake_stages(bench, monkeypatch) -> list[tuple[str, str]]:
    """Replace the stages' processes by a record of which stage ran in which phase."""
    ran: list[tuple[str, str]] = []

    def run_stage(stage, env, first_day, last_day, phase):
        ran.append((phase, stage))
        return {"phase": phase, "stage": stage, "seconds": 1.0, "peak_rss_mib": 1, "output": ""}

    monkeypatch.setattr(bench, "run_stage", run_stage)
    return ran


def test_resuming_runs_only_the_stages_after_the_one_the_run_stopped_at_and_extends_its_report(
    bench, tmp_path, monkeypatch
):
    import json

    earlier = [{"phase": "full", "stage": s, "seconds": 2.0, "peak_rss_mib": 5, "output": ""}
               for s in ("ingest", "dbt_build")]  # fmt: skip
    (tmp_path / "pipeline_scale.json").write_text(json.dumps({"stages": earlier}))
    (tmp_path / "warehouse.duckdb").write_text("kept")
    ran = fake_stages(bench, monkeypatch)
    argv = [
        "pipeline_scale.py",
        "tiny",
        "--home",
        str(tmp_path),
        "--resume-after",
        "dbt_build",
        "--stop-after",
        "train",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0
    assert ran == [("full", "validate_marts"), ("full", "train")]
    report = json.loads((tmp_path / "pipeline_scale.json").read_text())
    assert [r["stage"] for r in report["stages"]] == ["ingest", "dbt_build", "validate_marts", "train"]
    assert report["full_seconds"] == 6.0
    assert (tmp_path / "warehouse.duckdb").read_text() == "kept"  # nothing cleared


def test_resuming_refuses_a_home_that_did_not_stop_at_that_stage(bench, tmp_path, monkeypatch):
    import json

    (tmp_path / "pipeline_scale.json").write_text(json.dumps({"stages": [{"phase": "full", "stage": "ingest"}]}))
    ran = fake_stages(bench, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["pipeline_scale.py", "tiny", "--home", str(tmp_path), "--resume-after", "train"])
    with pytest.raises(SystemExit, match="full run did not stop after train"):
        bench.main()
    monkeypatch.setattr(sys, "argv", ["pipeline_scale.py", "tiny", "--home", str(tmp_path / "new"), "--resume-after",
                                      "train"])  # fmt: skip
    with pytest.raises(SystemExit, match="--resume-after needs the full run's home"):
        bench.main()
    assert ran == [] and not (tmp_path / "new").exists()

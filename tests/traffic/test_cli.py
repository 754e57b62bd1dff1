"""`recforge simulate-traffic` fails with one line naming the server it could not use."""

from pipelines.cli import main


def run_cli(tmp_path, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("RECFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECFORGE_SIM_USERS", "20")
    monkeypatch.setenv("RECFORGE_SIM_ITEMS", "30")
    monkeypatch.setenv("RECFORGE_TRAFFIC_TIMEOUT_SECONDS", "0.5")
    status = main(["simulate-traffic", *args])
    return status, capsys.readouterr().err.strip()


def test_an_unreachable_server_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    status, error = run_cli(tmp_path, monkeypatch, capsys, "--base-url", "http://127.0.0.1:9")
    assert status == 1 and len(error.splitlines()) == 1
    assert (
        error.startswith("recforge simulate-traffic: error: http://127.0.0.1:9/v1/users/") and "request failed" in error
    )
    assert not list((tmp_path / "home" / "landing" / "events").glob("date=*/traffic-*"))  # nothing half-written


def test_in_process_without_a_publication_is_one_line_naming_where_it_looked(tmp_path, monkeypatch, capsys):
    status, error = run_cli(tmp_path, monkeypatch, capsys)
    assert status == 1
    assert "in-process server: no publication became ready under" in error and "published" in error

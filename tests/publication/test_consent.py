"""A user who withheld consent for personalisation gets the fallback list, not a personalised one."""

import json

import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from pipelines.publication.publish import publish
from pipelines.warehouse.connection import connect
from pipelines.warehouse.transform import build_warehouse
from serving.config import ServingSettings
from serving.format import USER_RECS, current_version, read_manifest
from serving.main import create_app
from tests.conftest import copy_home


def test_a_user_who_withheld_consent_is_published_without_a_list_and_served_the_fallback(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    root = settings.published_dir
    users = sorted(set(pq.read_table(root / current_version(root) / USER_RECS).column("user_id").to_pylist()))
    withheld, other = users[3], users[4]
    with connect(settings) as con:
        # The champion was trained before the refusal and still knows the user: publication must drop them.
        last = con.execute("select max(event_ts) from raw.events").fetchone()[0]
        con.execute(
            "insert into raw.events select * replace ('consent-off' as event_id, cast(? as timestamptz) as event_ts, "
            "cast(? as json) as context, now() as ingested_at, 'consent-batch' as batch_id) "
            "from raw.events where user_id = ? limit 1",
            [str(last), json.dumps({"consent": {"personalization": False}}), withheld],
        )
    build_warehouse(settings)
    version = publish(settings).version
    listed = set(pq.read_table(root / version / USER_RECS).column("user_id").to_pylist())
    assert withheld not in listed and other in listed
    assert read_manifest(root / version)["counts"]["consent_withheld_users"] == 1
    with TestClient(create_app(ServingSettings(home=settings.home))) as client:
        assert _answer(client, withheld)["fallback"] is True
        assert _answer(client, other)["fallback"] is False


def _answer(client, user: str) -> dict:
    """The user's answer once the server has loaded the publication (503 until then)."""
    for _ in range(100):
        answer = client.get(f"/v1/users/{user}/recommendations?k=5")
        if answer.status_code == 200:
            return answer.json()
    raise AssertionError(f"no answer for {user}: {answer.status_code} {answer.text}")

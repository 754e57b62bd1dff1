"""The OpenAPI document is valid and says what the answers are; /docs and /redoc work offline."""

import re
import subprocess

import jsonschema
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from pipelines.publication.publish import current_version
from serving.config import ServingSettings
from serving.format import MAX_TOP_N
from serving.main import create_app
from tests.conftest import CHROMIUM_FLAGS
from tests.serving.test_serving import client_for, running_server


@pytest.fixture(scope="module")
def document():
    return create_app(ServingSettings(home="/nonexistent")).openapi()


def answer_schema(document, path, status="200"):
    """The JSON schema of an answer, with the document's components resolvable."""
    content = document["paths"][path]["get"]["responses"][status]["content"]["application/json"]
    return {**content["schema"], "components": document["components"]}


def assert_matches(document, path, status, body):
    schema = answer_schema(document, path, status)
    # Every field a real answer has is declared, and nothing else is expected of it.
    jsonschema.validate(body, {**schema, "$ref": schema["$ref"]})
    declared = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert declared["type"] == "object" and set(body) == set(declared["properties"])


def test_the_document_is_valid_openapi(document):
    validate(document)


@pytest.mark.parametrize(
    "path", ["/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar", "/healthz", "/readyz"]
)
def test_answers_are_described_as_objects_not_strings(document, path):
    schema = answer_schema(document, path)
    assert set(schema) == {"$ref", "components"}, f"{path}: the answer schema is {schema}"


def test_errors_are_documented_with_their_detail(document):
    expected = {
        "/v1/users/{user_id}/recommendations": {"200", "422", "503"},
        "/v1/items/{item_id}/similar": {"200", "404", "422", "503"},
    }
    for path, statuses in expected.items():
        responses = document["paths"][path]["get"]["responses"]
        assert set(responses) == statuses
        for status in statuses - {"200"}:
            assert answer_schema(document, path, status)["$ref"] == "#/components/schemas/ErrorDetail"
    assert document["components"]["schemas"]["ErrorDetail"]["required"] == ["detail"]


def test_k_has_its_minimum_and_the_publications_maximum(document):
    for path in ("/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar"):
        k = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "k")
        assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, MAX_TOP_N)
        assert "top_n" in k["description"]


def test_operations_are_described_for_api_users(document):
    item = document["components"]["schemas"]["Item"]["properties"]
    for reason in ("`model`", "`popular`", "`similar_to:<item_id>`"):
        assert reason in item["reason"]["description"]
    assert "popularity" in item["score"]["description"] and "model's score" in item["score"]["description"]
    for path, operation in ((p, o) for p, operations in document["paths"].items() for o in operations.values()):
        text = operation["summary"] + operation["description"]
        # Implementation notes (thread pool, FAISS, C calls, GIL) belong in the code, not in the API text.
        assert not re.search(r"GIL|thread|FAISS|C call|plain ``def``", text), f"{path}: {text}"


def test_real_answers_match_their_documented_schemas(published, document):
    recs = pd.read_parquet(published.published_dir / current_version(published.published_dir) / "user_recs.parquet")
    user, item = recs["user_id"].iloc[0], recs["item_id"].iloc[0]
    with client_for(published) as client:
        answers = {
            ("/v1/users/{user_id}/recommendations", "200"): client.get(f"/v1/users/{user}/recommendations?k=3"),
            ("/v1/users/{user_id}/recommendations", "422"): client.get(f"/v1/users/{user}/recommendations?k=0"),
            ("/v1/items/{item_id}/similar", "200"): client.get(f"/v1/items/{item}/similar?k=3"),
            ("/v1/items/{item_id}/similar", "404"): client.get("/v1/items/no-such-item/similar"),
            ("/healthz", "200"): client.get("/healthz"),
            ("/readyz", "200"): client.get("/readyz"),
        }
        for (path, status), answer in answers.items():
            assert answer.status_code == int(status), (path, answer.text)
            assert_matches(document, path, status, answer.json())
        unknown = client.get("/v1/users/nobody-at-all/recommendations").json()
        assert_matches(document, "/v1/users/{user_id}/recommendations", "200", unknown)
        assert unknown["fallback"] is True


def test_not_ready_and_no_publication_answers_match_their_schemas(settings, document):
    with client_for(settings, wait_ready=False) as client:
        assert_matches(document, "/readyz", "503", client.get("/readyz").json())
        assert_matches(document, "/v1/items/{item_id}/similar", "503", client.get("/v1/items/i1/similar").json())


# --- self-hosted docs


def local_urls(html: str) -> list[str]:
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""", html)
    return [a or b for a, b in urls]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_reference_only_local_assets_that_answer(settings, page):
    app = create_app(ServingSettings(home=settings.home))
    with TestClient(app) as client:
        html = client.get(page).text
        urls = local_urls(html)
        assert urls, f"{page} references no assets"
        assert "//" not in "".join(urls), f"{page} references another host: {urls}"
        for url in urls:
            assert client.get(url).status_code == 200, f"{page}: {url} does not answer"


def test_docs_render_the_operations_in_chromium_without_network(settings, chromium, tmp_path):
    with running_server(settings) as base:
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=10000",
             "--dump-dom", f"{base}/docs"],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
    for summary in ("Recommendations for a user", "Items similar to an item", "Readiness"):
        assert summary in dom, f"/docs did not render the operation {summary!r} offline"

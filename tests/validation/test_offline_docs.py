"""Data Docs are readable with no network: their pages load shipped copies of GX's CDN assets."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from pipelines.validation import offline_docs
from pipelines.validation.checkpoints import validate_raw_batch
from tests.conftest import CHROMIUM_FLAGS, NO_NETWORK, copy_home
from tests.validation.test_checkpoints import first_day

# Every request that is not file:// fails: an unreachable proxy and no name resolution.
EXTERNAL = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["'](https?:)?//""", re.IGNORECASE)
LOCAL = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["'](?![a-z]+:|#|//)([^"'?#]+)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(built, tmp_path_factory) -> Path:
    """Data Docs after one checkpoint, then moved to another folder (relative URLs must survive)."""
    settings = copy_home(built, tmp_path_factory.mktemp("offline_docs") / "home")
    validate_raw_batch(settings, *first_day(settings))
    moved = tmp_path_factory.mktemp("moved") / "data_docs"
    shutil.copytree(settings.reports_dir / "data_docs", moved)
    return moved


def test_the_data_docs_index_lists_the_validation_results_with_no_network(site, chromium, tmp_path):
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *NO_NETWORK, f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=5000", "--dump-dom", (site / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    # bootstrap-table draws one row per result from the page's JSON: without its script, none.
    rows = re.findall(r'<tr class="clickable-row" data-href="validations/([^/"]+)/', dom)
    assert sorted(rows) == ["raw_batch_quality", "raw_events"], dom[:2000]
    assert "fa-check-circle" in dom  # the status icons, drawn by font-awesome's stylesheet


def test_no_data_docs_page_loads_anything_from_the_network_and_every_local_asset_exists(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5  # index, two suites, two results
    for page in pages:
        text = page.read_text()
        assert not EXTERNAL.search(text), f"{page} still loads {EXTERNAL.search(text).group(0)}"
        for reference in LOCAL.findall(text):
            assert (page.parent / unquote(reference)).resolve().is_file(), f"{page}: {reference} is missing"
    fontawesome = site / "static" / "vendor" / "fontawesome-free"
    fonts = re.findall(r"url\(\.\./webfonts/([^)]+\.woff2)\)", (fontawesome / "css" / "all.min.css").read_text())
    shipped = {f.name for f in (fontawesome / "webfonts").iterdir()}
    assert {"fa-solid-900.woff2", "fa-regular-400.woff2"} <= shipped <= set(fonts)


def test_every_cdn_url_in_gx_templates_is_shipped_or_knowingly_left_out():
    """A GX upgrade that adds or bumps a CDN asset fails here, not silently in an analyst's browser."""
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    urls = set()
    for template in templates.glob("*.j2"):
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", template.read_text()):
            urls |= set(re.findall(r"""(?:src|href)=["'](https?://[^"']+)["']""", tag))
    assert urls, f"no CDN tags found in {templates}"
    assert urls <= set(offline_docs.CDN) | set(offline_docs.CHARTS), urls - set(offline_docs.CDN)


PAGE = """<html><head>
<link rel="shortcut icon" href="../static/images/favicon.ico" type="image/x-icon"/>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"
 integrity="sha384-x" crossorigin="anonymous"></script>
<script src="https://example.org/other.js"></script>
</head><body>
<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=abc">
{chart}</body></html>"""


def test_a_page_points_at_the_vendored_copies_relative_to_itself(tmp_path):
    page = tmp_path / "validations" / "suite" / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE.format(chart=""))
    assert offline_docs.localise_page(page, tmp_path)
    text = page.read_text()
    assert 'href="../../static/vendor/bootstrap/bootstrap.min.css"' in text
    assert '<script src="../../static/vendor/bootstrap/bootstrap.min.js"></script>' in text
    assert "integrity" not in text and "crossorigin" not in text  # SRI checks fail on file://
    assert "vega" not in text  # no chart on the page: the chart scripts go
    assert 'src="../../static/images/logo-long.png"' in text and "dataContextId" not in text
    assert 'href="../../static/images/favicon.ico"' in text  # GX's own link is one ../ short
    assert "https://example.org/other.js" in text  # unknown URLs are left alone (and caught by the test above)
    assert not offline_docs.localise_page(page, tmp_path)  # rewriting is idempotent


def test_a_page_that_draws_a_chart_keeps_vega_and_is_named(tmp_path, caplog):
    page = tmp_path / "index.html"
    page.write_text(PAGE.format(chart="<script>vegaEmbed('#c', spec)</script>"))
    with caplog.at_level(logging.WARNING):
        offline_docs.localise_page(page, tmp_path)
    assert "https://cdn.jsdelivr.net/npm/vega@5" in page.read_text()
    assert f"{page} draws a vega chart" in caplog.text


def test_localise_rewrites_only_pages_written_since_the_build_began(tmp_path):
    old, new = tmp_path / "old.html", tmp_path / "new.html"
    for page in (old, new):
        page.write_text(PAGE.format(chart=""))
    os.utime(old, (1_000_000, 1_000_000))
    assert offline_docs.localise(tmp_path, since=new.stat().st_mtime) == [new]
    assert (tmp_path / "static/vendor/jquery/jquery.min.js").is_file()


def test_missing_shipped_assets_are_named(tmp_path):
    shipped = tmp_path / "static"
    shutil.copytree(offline_docs.SHIPPED, shipped)
    (shipped / "jquery" / "jquery.min.js").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing from .*static: jquery/jquery\.min\.js \(run python -m"):
        offline_docs.install(tmp_path / "site", shipped)

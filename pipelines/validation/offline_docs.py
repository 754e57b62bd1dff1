"""Data Docs that work without a network.

GX 1.x renders every Data Docs page with <script> and <link> tags pointing at public CDNs
(bootstrap, jQuery, bootstrap-table, font-awesome, ...). Offline the index's list of validation
results, which bootstrap-table draws from an in-page JSON, stays empty and the status icons
(font-awesome) are missing. GX's site builder has no setting for where its assets come from, so
after each build the pages just written are rewritten here to load copies shipped with recforge
in expectations/static/ (the npm packages below, at the versions GX's templates pin), copied
into the site as data_docs/static/vendor/. URLs are relative to each page so a home can move.

vega, vega-lite and vega-embed (≈ 0.8 MB) are not shipped: GX draws vega charts only for
profiling results and a few distribution expectations, none of which recforge's suites use.
Their tags are removed from pages that draw no chart; a page that does draw one keeps them and
a warning names it.

`python -m pipelines.validation.offline_docs` refreshes expectations/static/ from the npm
registry (needs npm); the files are committed so a build never needs the network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import REPO_ROOT

log = logging.getLogger(__name__)

SHIPPED = REPO_ROOT / "expectations" / "static"
VENDOR = Path("static") / "vendor"  # inside the Data Docs site


@dataclass(frozen=True)
class Asset:
    package: str  # npm package@version
    source: str  # path inside the npm package
    target: str  # path under expectations/static/ (and the site's static/vendor/)


JQUERY = "jquery@3.7.1"
POPPER = "popper.js@1.12.9"
BOOTSTRAP = "bootstrap@4.3.1"
TABLE = "bootstrap-table@1.19.1"
DATEPICKER = "bootstrap-datepicker@1.9.0"
DARK = "@forevolve/bootstrap-dark@1.1.0"
FONTAWESOME = "@fortawesome/fontawesome-free@6.6.0"

FILTER = "extensions/filter-control/bootstrap-table-filter-control"

# Each CDN URL in GX's templates (render/view/templates/{page,index_page,js_script_imports}.j2).
CDN: dict[str, Asset] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": Asset(JQUERY, "dist/jquery.min.js", "jquery/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": Asset(
        POPPER, "dist/umd/popper.min.js", "popper.js/popper.min.js"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": Asset(
        BOOTSTRAP, "dist/css/bootstrap.min.css", "bootstrap/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": Asset(
        BOOTSTRAP, "dist/js/bootstrap.min.js", "bootstrap/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": Asset(
        TABLE, "dist/bootstrap-table.min.css", "bootstrap-table/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": Asset(
        TABLE, "dist/bootstrap-table.min.js", "bootstrap-table/bootstrap-table.min.js"
    ),
    f"https://unpkg.com/bootstrap-table@1.19.1/dist/{FILTER}.min.js": Asset(
        TABLE, f"dist/{FILTER}.min.js", "bootstrap-table/bootstrap-table-filter-control.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": Asset(
        DATEPICKER, "dist/js/bootstrap-datepicker.min.js", "bootstrap-datepicker/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": Asset(
        DATEPICKER, "dist/css/bootstrap-datepicker.min.css", "bootstrap-datepicker/bootstrap-datepicker.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": Asset(
        DARK, "dist/css/bootstrap-prefers-dark.min.css", "bootstrap-dark/bootstrap-prefers-dark.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": Asset(
        FONTAWESOME, "css/all.min.css", "fontawesome-free/css/all.min.css"
    ),
}
# The filter-control stylesheet is linked at 1.19.0 (index, minified; other pages, not): 1.19.1's
# minified file is the same stylesheet.
for _url in (f"https://unpkg.com/bootstrap-table@1.19.0/dist/{FILTER}.css",
             f"https://unpkg.com/bootstrap-table@1.19.0/dist/{FILTER}.min.css"):  # fmt: skip
    CDN[_url] = Asset(TABLE, f"dist/{FILTER}.min.css", "bootstrap-table/bootstrap-table-filter-control.min.css")

# What the shipped files load themselves (font-awesome's CSS: ../webfonts/). Only the solid and
# regular faces GX's icons use, and the v4 shims; woff2 only, which every current browser reads.
FONTS = [
    Asset(FONTAWESOME, f"webfonts/{name}", f"fontawesome-free/webfonts/{name}")
    for name in ("fa-solid-900.woff2", "fa-regular-400.woff2", "fa-v4compatibility.woff2")
]
# Each package's licence file; popper.js 1.12.9 ships none (MIT, stated in its file's header).
LICENSES = {
    JQUERY: ("LICENSE.txt", "jquery"),
    POPPER: ("dist/umd/popper.min.js", "popper.js"),
    BOOTSTRAP: ("LICENSE", "bootstrap"),
    TABLE: ("LICENSE", "bootstrap-table"),
    DATEPICKER: ("LICENSE", "bootstrap-datepicker"),
    DARK: ("LICENSE", "bootstrap-dark"),
    FONTAWESOME: ("LICENSE.txt", "fontawesome-free"),
}

CHARTS = ("https://cdn.jsdelivr.net/npm/vega@5", "https://cdn.jsdelivr.net/npm/vega-lite@5",
          "https://cdn.jsdelivr.net/npm/vega-embed@6")  # fmt: skip
# Links to the site's own images: GX's result pages reach them with one ../ too few.
IMAGES = re.compile(r"""\b(src|href)="(?:\./|\.\./)*static/images/([^"]+)\"""")
# GX's logo, fetched from its web-asset bucket with the data context's id as a query: the site's
# own static/images/ has the same picture.
LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/logo-long\.png[^\"']*")

_TAG = re.compile(r"<(script|link)\b[^>]*>(\s*</script>)?", re.IGNORECASE)
_URL = re.compile(r"""\b(src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SRI = re.compile(r"""\s+(integrity|crossorigin)\s*=\s*["'][^"']*["']""", re.IGNORECASE)


def install(site: Path, shipped: Path = SHIPPED) -> None:
    """Copy the shipped assets into the site (static/vendor/), where the rewritten pages point."""
    missing = [a.target for a in [*CDN.values(), *FONTS] if not (shipped / a.target).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Data Docs assets missing from {shipped}: {', '.join(sorted(set(missing)))}"
            " (run python -m pipelines.validation.offline_docs to refresh them)"
        )
    shutil.copytree(shipped, site / VENDOR, dirs_exist_ok=True)


def localise_page(page: Path, site: Path) -> bool:
    """Point one page's CDN tags at the site's static/vendor/ copies; True if the page changed."""
    text = page.read_text(encoding="utf-8")
    draws_charts = "vegaEmbed" in text
    if draws_charts:
        log.warning("%s draws a vega chart; vega is not shipped, so the chart needs a network", page)

    def relative(target: Path) -> str:
        return Path(os.path.relpath(site / target, page.parent)).as_posix()

    def tag(match: re.Match) -> str:
        whole = match.group(0)
        url = _URL.search(whole)
        if url is None:
            return whole
        if url.group(2) in CDN:
            local = relative(VENDOR / CDN[url.group(2)].target)
            return _SRI.sub("", whole.replace(url.group(0), f'{url.group(1)}="{local}"'))
        if url.group(2) in CHARTS and not draws_charts:
            return ""
        return whole

    new = _TAG.sub(tag, text)
    new = LOGO.sub(lambda _: relative(Path("static") / "images" / "logo-long.png"), new)
    new = IMAGES.sub(lambda m: f'{m.group(1)}="{relative(Path("static") / "images" / m.group(2))}"', new)
    if new != text:
        page.write_text(new, encoding="utf-8")
    return new != text


def localise(site: Path, since: float, shipped: Path = SHIPPED) -> list[Path]:
    """Install the assets and rewrite every page GX wrote at or after `since` (a time.time()).

    Only this build's pages are read: the site keeps every result ever rendered, so rewriting all
    of them would grow with each daily run. Earlier pages were rewritten when they were written.
    """
    install(site, shipped)
    slack = 2.0  # coarse file-system timestamps
    pages = [p for p in site.rglob("*.html") if p.stat().st_mtime >= since - slack]
    return [page for page in pages if localise_page(page, site)]


def refresh(target: Path = SHIPPED) -> None:
    """Fetch the pinned npm packages with npm and copy the files recforge ships (and each licence)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("refreshing the Data Docs assets needs npm (apt-get install npm)")
    assets = [*dict.fromkeys([*CDN.values(), *FONTS])]
    packages = sorted({a.package for a in assets})
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subprocess.run([npm, "pack", "--silent", *packages], cwd=work, check=True, capture_output=True)
        unpacked = {}
        for package in packages:
            name, version = package.rsplit("@", 1)
            archive = work / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
            folder = work / archive.stem
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
            unpacked[package] = folder / "package"
        shutil.rmtree(target, ignore_errors=True)
        for asset in assets:
            (target / asset.target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(unpacked[asset.package] / asset.source, target / asset.target)
        for package, (licence, folder) in LICENSES.items():
            text = (unpacked[package] / licence).read_text(encoding="utf-8")
            if licence.endswith(".js"):  # the licence is the file's leading comment
                text = text[: text.index("*/") + 2] + "\n"
            (target / folder / "LICENSE").write_text(text, encoding="utf-8")
            (target / folder / "VERSION").write_text(package + "\n")
    print(f"Data Docs assets refreshed in {target}", file=sys.stderr)


if __name__ == "__main__":
    refresh()

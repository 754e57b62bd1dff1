"""Small helpers for the self-contained HTML reports analysts open (drift, evaluation, index).

Reports are single files with their plots embedded as PNG data URIs, so a report can be
mailed, archived or opened from disk without a server.
"""

from __future__ import annotations

import base64
import html
import io

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1f2933; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.sub { color: #52606d; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .4rem .6rem; text-align: left; font-size: .95rem; }
th { background: #f5f7fa; }
.ok { color: #1f7a3a; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
.warn { color: #a15c07; font-weight: 600; } .none { color: #7b8794; }
img { max-width: 100%; border: 1px solid #e4e7eb; margin: .5rem 0; }
code { background: #f5f7fa; padding: 0 .25rem; }
"""


def escape(value: object) -> str:
    return html.escape(str(value))


def page(title: str, subtitle: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>{body}</body></html>\n"
    )


def table(headers: list[str], rows: list[list[object]], raw_columns: frozenset[int] = frozenset()) -> str:
    """An HTML table; cells in `raw_columns` are inserted as HTML, all others escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw_columns else escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def status(ok: bool | None, good: str = "ok", bad: str = "failed") -> str:
    if ok is None:
        return "<span class='none'>not run</span>"
    return f"<span class='ok'>{good}</span>" if ok else f"<span class='bad'>{bad}</span>"


def figure_img(fig, alt: str) -> str:
    """Render a matplotlib figure to an embedded PNG and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"

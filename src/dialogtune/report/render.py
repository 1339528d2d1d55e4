"""Render a :class:`Document` as Markdown (PNG files beside it) and as self-contained HTML.

The HTML embeds every PNG as a ``data:image/png;base64`` URI and inlines its CSS, so the one file
opens in any browser without a server or network. Every piece of text from a run (dialogues,
model outputs, names) is escaped: model outputs are arbitrary strings, random-weight models emit
control characters, and a summary containing ``<script>`` must stay text.
"""

from __future__ import annotations

import base64
import html
import re

from dialogtune.report.document import (
    Block,
    Document,
    ExampleBlock,
    Image,
    Paragraph,
    Preformatted,
    Table,
)

# C0/C1 control characters other than tab and newline: invalid in HTML, invisible in Markdown.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MD_SPECIAL_RE = re.compile(r"([\\`*_\[\]<>|#])")
_SHORT_LABELS = {"rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L", "rougeLsum": "R-Lsum"}


def clean(text: str) -> str:
    return _CONTROL_RE.sub("\ufffd", str(text))


def md_escape(text: str) -> str:
    """Escape Markdown/HTML syntax so text renders literally, on one line (table-cell safe)."""
    return _MD_SPECIAL_RE.sub(r"\\\1", " ".join(clean(text).split()))


def esc(text: str) -> str:
    return html.escape(clean(text), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---- Markdown -------------------------------------------------------------------------------


def _md_table(table: Table) -> list[str]:
    lines = [f"**{md_escape(table.title)}**", ""] if table.title else []
    lines.append("| " + " | ".join(md_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in table.align or []) + "|")
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{md_escape(table.note)}_"]
    return lines


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _example_table(ex: ExampleBlock) -> Table:
    """Each model's summary and per-example ROUGE (x100): the same table in both formats."""
    metrics = list(ex.outputs[0].scores) if ex.outputs else []
    rows = [
        [o.model, o.prediction or "(empty)", *[f"{100 * o.scores.get(m, 0.0):.1f}" for m in metrics]]
        for o in ex.outputs
    ]
    headers = ["Model", "Summary", *[_SHORT_LABELS.get(m, m) for m in metrics]]
    return Table(headers, rows, align=["l", "l"] + ["r"] * len(metrics))


def _md_example(ex: ExampleBlock) -> list[str]:
    fence = _fence(ex.dialogue)
    lines = [f"#### Example {md_escape(ex.id)}: {md_escape(ex.reason)}", "", "Dialogue:", ""]
    lines += [f"{fence}text", clean(ex.dialogue), fence, ""]
    for i, ref in enumerate(ex.references):
        number = f" {i + 1}" if len(ex.references) > 1 else ""
        lines.append(f"> **Reference{number}:** {md_escape(ref)}")
    return lines + [""] + _md_table(_example_table(ex))


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        text = md_escape(block.text)
        return [f"> **Warning:** {text}" if block.kind == "warning" else text]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Image):
        return [f"![{md_escape(block.alt)}]({block.filename})"] + (
            [f"_{md_escape(block.caption)}_"] if block.caption else []
        )
    if isinstance(block, ExampleBlock):
        return _md_example(block)
    if isinstance(block, Preformatted):
        fence = _fence(block.text)
        return [fence, clean(block.text), fence]
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    lines = [f"# {md_escape(doc.title)}", ""]
    if doc.subtitle:
        lines += [md_escape(doc.subtitle), ""]
    lines += ["Contents: " + " · ".join(f"[{md_escape(s.title)}](#{s.anchor})" for s in doc.sections), ""]
    for section in doc.sections:
        lines += [f'<a id="{section.anchor}"></a>', "", f"## {md_escape(section.title)}", ""]
        for block in section.blocks:
            lines += _md_block(block) + [""]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5rem 2rem;color:#1b1f24;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
nav{background:#f6f8fa;padding:.5rem .8rem;border-radius:6px;font-size:.92rem}nav a{margin-right:.9rem}
table{border-collapse:collapse;margin:.4rem 0 .3rem;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;vertical-align:top}th{background:#f6f8fa}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600;
padding:.3rem 0}.note{color:#57606a;font-size:.85rem;margin:.1rem 0 1rem}
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .8rem;border-radius:6px}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #d0d7de}figcaption{color:#57606a;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;border-radius:6px;overflow-x:auto;font-size:.82rem;white-space:pre-wrap}
.example{border:1px solid #d0d7de;border-radius:8px;padding:.4rem 1rem .8rem;margin:1rem 0}
.example h4{margin:.5rem 0}.side{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,3fr);gap:1rem}
.side table{width:100%}.side pre{margin:0}
.side th,.side td:first-child{white-space:nowrap}.reason{color:#57606a;font-weight:normal}.ref{background:#eef6ee;padding:.3rem .6rem}
"""


def _html_table(table: Table) -> str:
    aligns = table.align or []
    head = "".join(f'<th class="{aligns[i]}">{esc(h)}</th>' for i, h in enumerate(table.headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{aligns[i]}">{esc(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{esc(table.title)}</caption>" if table.title else ""
    note = f'<p class="note">{esc(table.note)}</p>' if table.note else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _html_example(ex: ExampleBlock) -> str:
    refs = "".join(
        f'<p class="ref"><b>Reference{f" {i + 1}" if len(ex.references) > 1 else ""}:</b> {esc(r)}</p>'
        for i, r in enumerate(ex.references)
    )
    # Side by side: the dialogue on the left, what the references and models made of it on the right.
    return (
        f'<div class="example"><h4>Example {esc(ex.id)} <span class="reason">{esc(ex.reason)}</span></h4>'
        f'<div class="side"><details open><summary>Dialogue</summary><pre>{esc(ex.dialogue)}</pre></details>'
        f"<div>{refs}{_html_table(_example_table(ex))}</div></div></div>"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        css = ' class="warning"' if block.kind == "warning" else ""
        return f"<p{css}>{esc(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        caption = f"<figcaption>{esc(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{data_uri(block.png)}" alt="{esc(block.alt)}">{caption}</figure>'
    if isinstance(block, ExampleBlock):
        return _html_example(block)
    if isinstance(block, Preformatted):
        return f"<pre>{esc(block.text)}</pre>"
    raise TypeError(f"unknown block {type(block).__name__}")


def render_html(doc: Document) -> str:
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in doc.sections)
    parts = [
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>'
        + "\n".join(_html_block(b) for b in s.blocks)
        + "</section>"
        for s in doc.sections
    ]
    subtitle = f"<p>{esc(doc.subtitle)}</p>" if doc.subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(doc.title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{esc(doc.title)}</h1>{subtitle}<nav>{nav}</nav>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )

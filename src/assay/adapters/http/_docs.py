"""The ``/docs`` page: the OpenAPI document rendered as one self-contained HTML page.

Rendered on the server from the same document ``/api/v1/openapi.json`` serves, with no
scripts, fonts or stylesheets from elsewhere, so it works on a machine without internet.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 70rem;
       padding: 1rem 2rem; color: #1d2330; }
h1 { margin-bottom: 0; } h2 { border-bottom: 2px solid #d8dee9; padding-bottom: .2rem;
     margin-top: 2.5rem; }
code { font: 13px ui-monospace, monospace; background: #f2f4f8; padding: 0 .25rem; }
.op { border: 1px solid #d8dee9; border-radius: 6px; margin: 1rem 0; padding: .5rem 1rem; }
.op h3 { margin: .3rem 0; font-size: 1rem; }
.method { display: inline-block; min-width: 4.5rem; text-align: center; color: #fff;
          border-radius: 4px; font: bold 12px ui-monospace, monospace; padding: .15rem 0; }
.GET { background: #2f6fbd; } .POST { background: #2c8a4b; }
.PATCH { background: #b7791f; } .DELETE { background: #c0392b; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid #e5e9f0;
         padding: .25rem .5rem; font-size: 14px; }
th { background: #f7f8fb; }
.muted { color: #5c667a; }
pre { background: #f2f4f8; border-radius: 4px; padding: .5rem .75rem; overflow-x: auto; }
pre code { background: none; padding: 0; }
/* The endpoint index: one card per tag, in as many columns as fit; a path never shares
   a line with another and wraps (rather than being clipped) on a narrow screen. */
.index { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(30rem, 100%), 1fr));
         gap: .75rem 1.5rem; }
.index section { border: 1px solid #d8dee9; border-radius: 6px; padding: .4rem .8rem; }
.index h3 { margin: .2rem 0 .4rem; font-size: 1rem; }
.index ul { list-style: none; margin: 0; padding: 0; }
.index li { display: flex; gap: .5rem; align-items: baseline; margin: .15rem 0; }
.index li .method { flex: none; }
.index li a { min-width: 0; overflow-wrap: anywhere; }
"""


def render_docs(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    title = str(info.get("title", "API"))
    operations = list(_operations(document))
    tags = [t["name"] for t in document.get("tags", [])]
    tags += sorted({op["tags"][0] for _, _, op in operations} - set(tags))
    descriptions = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)} API <span class='muted'>{escape(str(info.get('version', '')))}"
        "</span></h1>",
        f"<p>{_text(info.get('description', ''))}</p>",
        "<p>Authenticate with <code>Authorization: Bearer &lt;API key&gt;</code>. "
        'The machine-readable description is <a href="/api/v1/openapi.json">'
        "<code>/api/v1/openapi.json</code></a> (OpenAPI 3.1).</p>",
        _contents(tags, operations),
    ]
    for tag in tags:
        parts.append(f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>')
        if descriptions.get(tag):
            parts.append(f"<p>{_text(descriptions[tag])}</p>")
        parts += [
            _operation(method, path, op) for method, path, op in operations if op["tags"][0] == tag
        ]
    parts.append(_schemas(document.get("components", {}).get("schemas", {})))
    parts.append("</body></html>")
    return "\n".join(parts)


def _operations(document: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, methods in document.get("paths", {}).items():
        for method, op in methods.items():
            yield method.upper(), path, op


def _contents(tags: list[str], operations: list[tuple[str, str, dict[str, Any]]]) -> str:
    sections = []
    for tag in tags:
        links = "".join(
            f'<li><span class="method {escape(method)}">{escape(method)}</span>'
            f'<a href="#op-{escape(op["operationId"])}"><code>{escape(path)}</code></a></li>'
            for method, path, op in operations
            if op["tags"][0] == tag
        )
        sections.append(
            f'<section><h3><a href="#tag-{escape(tag)}">{escape(tag)}</a></h3>'
            f"<ul>{links}</ul></section>"
        )
    return f'<nav><h2>Endpoints</h2><div class="index">{"".join(sections)}</div></nav>'


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    public = op.get("security") == []
    parts = [
        f'<div class="op" id="op-{escape(op["operationId"])}">',
        f'<h3><span class="method {escape(method)}">{escape(method)}</span> '
        f"<code>{escape(path)}</code></h3>",
        f"<p><strong>{_text(op.get('summary', ''))}</strong>"
        + (" <span class='muted'>(no API key needed)</span>" if public else "")
        + "</p>",
    ]
    if op.get("description"):
        parts.append(f"<p>{_text(op['description'])}</p>")
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_type(p.get('schema', {}))}"
            f"</td><td>{_text(p.get('description', ''))}</td></tr>"
            for p in op["parameters"]
        )
        parts.append(
            "<table><tr><th>Parameter</th><th>In</th><th>Required</th><th>Type</th>"
            f"<th>Description</th></tr>{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        media = next(iter(body["content"].values()))
        optional = "" if body.get("required") else " <span class='muted'>(optional)</span>"
        parts.append(f"<p>Request body: {_type(media['schema'])}{optional}</p>")
        if media.get("example") not in (None, {}):
            example = json.dumps(media["example"], indent=2, ensure_ascii=False)
            parts.append(f"<p>Example:</p><pre><code>{escape(example)}</code></pre>")
    rows = ""
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        schema = next(iter(content.values()))["schema"] if content else None
        rows += (
            f"<tr><td><code>{escape(status)}</code></td><td>"
            f"{_type(schema) if schema else '—'}</td>"
            f"<td>{_text(response.get('description', ''))}</td></tr>"
        )
    parts.append(
        "<table><tr><th>Status</th><th>Body</th><th>When</th></tr>" + rows + "</table></div>"
    )
    return "".join(parts)


def _schemas(schemas: dict[str, Any]) -> str:
    parts = ['<h2 id="schemas">Schemas</h2>']
    for name, schema in schemas.items():
        parts.append(f'<h3 id="schema-{escape(name)}"><code>{escape(name)}</code></h3>')
        if schema.get("description"):
            parts.append(f"<p>{_text(schema['description'])}</p>")
        if "enum" in schema:
            values = ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
            parts.append(f"<p>One of: {values}</p>")
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            rows = "".join(
                f"<tr><td><code>{escape(field)}</code></td><td>{_type(prop)}</td>"
                f"<td>{'yes' if field in required else 'no'}</td>"
                f"<td>{_text(prop.get('description', ''))}</td></tr>"
                for field, prop in properties.items()
            )
            parts.append(
                "<table><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th>"
                f"</tr>{rows}</table>"
            )
    return "".join(parts)


def _type(schema: dict[str, Any]) -> str:
    """A short, linked description of a JSON Schema: ``array of Flag``, ``string | null``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}"><code>{escape(name)}</code></a>'
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(_type(s) for s in schema[combinator])
    kind = schema.get("type")
    if kind == "array" and "prefixItems" in schema:  # a tuple, e.g. a [start, end] range
        return "[" + ", ".join(_type(s) for s in schema["prefixItems"]) + "]"
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    label = escape(" | ".join(kind) if isinstance(kind, list) else str(kind or "any JSON"))
    if "enum" in schema:
        label += " (" + ", ".join(escape(str(v)) for v in schema["enum"]) + ")"
    bounds = [
        f"{symbol} {schema[key]}"
        for key, symbol in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
            ("maxLength", "length ≤"),
        )
        if key in schema
    ]
    if bounds:
        label += " <span class='muted'>(" + escape(", ".join(bounds)) + ")</span>"
    return label


def _text(value: Any) -> str:
    """Escape prose and show its `backticked` words as code."""
    pieces = escape(str(value)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))

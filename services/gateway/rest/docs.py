"""A self-contained HTML reference rendered from the OpenAPI document.

No scripts or assets from elsewhere, so the page works where the gateway cannot reach the
internet; tools that want more read ``/openapi.json`` instead.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
code,.type{font-family:ui-monospace,monospace;font-size:.92em}
h2{border-bottom:2px solid #ddd;margin-top:2.5rem}
section{border:1px solid #e4e4e4;border-radius:6px;padding:.2rem 1rem 1rem;margin:1rem 0}
.verb{display:inline-block;min-width:4.5rem;font-weight:700;color:#fff;background:#555;
  border-radius:4px;padding:0 .4rem;text-align:center;margin-right:.5rem}
.get{background:#2b7bb9}.post{background:#2f9e44}.patch{background:#c77c02}
.put{background:#8e44ad}.delete{background:#c0392b}
table{border-collapse:collapse;width:100%}td,th{border-top:1px solid #eee;padding:.3rem;
  text-align:left;vertical-align:top}th{font-weight:600}.flag{color:#888;font-size:.85em}
.text{white-space:pre-wrap}
"""


def render_docs(document: dict[str, Any]) -> str:
    info = document["info"]
    title = escape(f"{info['title']} {info['version']}")
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} API</title>",
        f"<style>{_STYLE}</style></head><body><h1>{title} API</h1>",
        '<p>The REST/JSON form of the gRPC API. Machine-readable: <a href="openapi.json">'
        "openapi.json</a>. Errors are <code>google.rpc.Status</code> bodies.</p>",
    ]
    operations = _operations_by_tag(document)
    parts.append(_contents(document, operations))
    for tag in document.get("tags", []):
        parts.append(f'<h2 id="tag-{escape(tag["name"])}">{escape(tag["name"])}</h2>')
        parts.append(_paragraph(tag.get("description", "")))
        parts += [_operation(path, verb, op) for path, verb, op in operations.get(tag["name"], [])]
    parts.append("<h2 id=schemas>Schemas</h2>")
    schemas = document["components"]["schemas"]
    parts += [_schema(name, schema) for name, schema in schemas.items()]
    parts.append("</body></html>")
    return "\n".join(parts)


def _operations_by_tag(document: dict[str, Any]) -> dict[str, list[tuple[str, str, Any]]]:
    out: dict[str, list[tuple[str, str, Any]]] = {}
    for path, item in document["paths"].items():
        for verb, op in item.items():
            for tag in op.get("tags", ["default"]):
                out.setdefault(tag, []).append((path, verb, op))
    return out


def _contents(document: dict[str, Any], operations: dict[str, list[tuple[str, str, Any]]]) -> str:
    items = []
    for tag in document.get("tags", []):
        links = [
            f'<li><a href="#op-{escape(op["operationId"])}">{escape(verb.upper())} '
            f"<code>{escape(path)}</code></a></li>"
            for path, verb, op in operations.get(tag["name"], [])
        ]
        items.append(
            f'<li><a href="#tag-{escape(tag["name"])}">{escape(tag["name"])}</a>'
            f"<ul>{''.join(links)}</ul></li>"
        )
    return f"<nav><ul>{''.join(items)}<li><a href=#schemas>Schemas</a></li></ul></nav>"


def _operation(path: str, verb: str, op: dict[str, Any]) -> str:
    parts = [
        f'<section id="op-{escape(op["operationId"])}"><h3><span class="verb {escape(verb)}">'
        f"{escape(verb.upper())}</span><code>{escape(path)}</code></h3>",
        _paragraph(op.get("summary", "")),
        _paragraph(op.get("description", "")),
        _parameters(op.get("parameters", [])),
    ]
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        parts.append(f"<p>Body: <span class=type>{_type(body['schema'])}</span></p>")
    parts += _responses(op.get("responses", {}))
    parts.append("</section>")
    return "\n".join(parts)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td class=type>{_type(p.get('schema', {}))}</td>"
        f"<td>{_flags(p.get('required', False))}{_pre(p.get('description', ''))}</td></tr>"
        for p in parameters
    ]
    if not rows:
        return ""
    header = "<tr><th>Parameter</th><th>In</th><th>Type</th><th></th></tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _responses(responses: dict[str, Any]) -> list[str]:
    parts = []
    for status, response in responses.items():
        for media, content in response.get("content", {}).items():
            parts.append(
                f"<p>{escape(status)} <code>{escape(media)}</code>: "
                f"<span class=type>{_type(content['schema'])}</span></p>"
            )
        if status == "200" and "stream" in response.get("description", ""):
            parts.append(_paragraph(response["description"]))
    return parts


def _schema(name: str, schema: dict[str, Any]) -> str:
    parts = [
        f'<section id="schema-{escape(name)}"><h3><code>{escape(name)}</code></h3>',
        _paragraph(schema.get("description", "")),
    ]
    if "enum" in schema:
        parts.append("<p class=type>" + " | ".join(escape(v) for v in schema["enum"]) + "</p>")
    required = set(schema.get("required", []))
    rows = [
        f"<tr><td><code>{escape(field)}</code></td><td class=type>{_type(prop)}</td><td>"
        f"{_flags(field in required, prop.get('readOnly', False))}"
        f"{_pre(prop.get('description', ''))}</td></tr>"
        for field, prop in schema.get("properties", {}).items()
    ]
    if rows:
        parts.append(
            "<table><tr><th>Field</th><th>Type</th><th></th></tr>" + "".join(rows) + "</table>"
        )
    for part in schema.get("allOf", []):
        parts.append(f"<p>Includes <span class=type>{_type(part)}</span></p>")
    parts.append("</section>")
    return "\n".join(parts)


def _type(schema: dict[str, Any]) -> str:
    """A short, linked rendering of a schema's type."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name.rsplit(".", 1)[-1])}</a>'
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type(schema['additionalProperties'])}"
    if kind == "object" and schema.get("properties") == {}:
        return "empty object"
    if kind == "object" and "properties" in schema:
        fields = ", ".join(f"{escape(k)}: {_type(v)}" for k, v in schema["properties"].items())
        return f"{{{fields}}}"
    if kind is None:
        return "any JSON value"
    text = escape(kind + (f" ({schema['format']})" if "format" in schema else ""))
    return text + (" or null" if schema.get("nullable") else "")


def _flags(required: bool, read_only: bool = False) -> str:
    flags = [name for name, on in (("required", required), ("output only", read_only)) if on]
    return f"<span class=flag>{escape(', '.join(flags))}</span> " if flags else ""


def _paragraph(text: str) -> str:
    return f"<p class=text>{escape(text)}</p>" if text else ""


def _pre(text: str) -> str:
    return f"<span class=text>{escape(text)}</span>" if text else ""

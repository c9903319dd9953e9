"""Primitive values, string utilities and ``PreviewAny`` (no tensors involved)."""

from __future__ import annotations

import json
import re
from typing import Any

from comfyfleet.workflow.runner import NodeContext, NodeOutput
from services.executor.native.nodes.base import NodeSet

nodes = NodeSet()


def _identity(ctx: NodeContext, value: Any) -> tuple[Any]:
    return (value,)


for _primitive in (
    "PrimitiveBoolean",
    "PrimitiveFloat",
    "PrimitiveInt",
    "PrimitiveString",
    "PrimitiveStringMultiline",
):
    nodes.node(_primitive)(_identity)


@nodes.node("StringConcatenate")
def string_concatenate(
    ctx: NodeContext, string_a: str, string_b: str, delimiter: str = ""
) -> tuple[str]:
    return (delimiter.join((string_a, string_b)),)


@nodes.node("StringSubstring")
def string_substring(ctx: NodeContext, string: str, start: int, end: int) -> tuple[str]:
    return (string[start:end],)


@nodes.node("StringLength")
def string_length(ctx: NodeContext, string: str) -> tuple[int]:
    return (len(string),)


_CASES = {
    "UPPERCASE": str.upper,
    "lowercase": str.lower,
    "Capitalize": str.capitalize,
    "Title Case": str.title,
}


@nodes.node("CaseConverter")
def case_converter(ctx: NodeContext, string: str, mode: str) -> tuple[str]:
    return (_CASES[mode](string),)


_TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


@nodes.node("StringTrim")
def string_trim(ctx: NodeContext, string: str, mode: str) -> tuple[str]:
    return (_TRIMS[mode](string),)


@nodes.node("StringReplace")
def string_replace(ctx: NodeContext, string: str, find: str, replace: str) -> tuple[str]:
    return (string.replace(find, replace),)


@nodes.node("StringContains")
def string_contains(
    ctx: NodeContext, string: str, substring: str, case_sensitive: bool = True
) -> tuple[bool]:
    if not case_sensitive:
        string, substring = string.lower(), substring.lower()
    return (substring in string,)


@nodes.node("StringCompare")
def string_compare(
    ctx: NodeContext, string_a: str, string_b: str, mode: str, case_sensitive: bool = True
) -> tuple[bool]:
    if not case_sensitive:
        string_a, string_b = string_a.lower(), string_b.lower()
    if mode == "Starts With":
        return (string_a.startswith(string_b),)
    if mode == "Ends With":
        return (string_a.endswith(string_b),)
    return (string_a == string_b,)


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> re.RegexFlag:
    flags = re.RegexFlag(0)
    if case_insensitive:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    return flags


@nodes.node("RegexMatch")
def regex_match(
    ctx: NodeContext,
    string: str,
    regex_pattern: str,
    case_insensitive: bool = True,
    multiline: bool = False,
    dotall: bool = False,
) -> tuple[bool]:
    """Whether the pattern occurs in the string (an invalid pattern never matches)."""
    try:
        found = re.search(regex_pattern, string, _flags(case_insensitive, multiline, dotall))
    except re.error:
        return (False,)
    return (found is not None,)


def _extract(string: str, pattern: str, mode: str, flags: re.RegexFlag, group_index: int) -> str:
    if mode == "First Match":
        match = re.search(pattern, string, flags)
        return match.group(0) if match else ""
    if mode == "All Matches":
        found = re.findall(pattern, string, flags)
        return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
    if mode == "First Group":
        match = re.search(pattern, string, flags)
        if match and len(match.groups()) >= group_index:
            return match.group(group_index) or ""
        return ""
    groups = [
        m.group(group_index) or ""
        for m in re.finditer(pattern, string, flags)
        if m.groups() and len(m.groups()) >= group_index
    ]
    return "\n".join(groups)


@nodes.node("RegexExtract")
def regex_extract(
    ctx: NodeContext,
    string: str,
    regex_pattern: str,
    mode: str,
    case_insensitive: bool = True,
    multiline: bool = False,
    dotall: bool = False,
    group_index: int = 1,
) -> tuple[str]:
    """Matches or groups, newline-joined for the "All" modes ("" for an invalid pattern)."""
    flags = _flags(case_insensitive, multiline, dotall)
    try:
        return (_extract(string, regex_pattern, mode, flags, group_index),)
    except re.error:
        return ("",)


@nodes.node("RegexReplace")
def regex_replace(
    ctx: NodeContext,
    string: str,
    regex_pattern: str,
    replace: str,
    case_insensitive: bool = True,
    multiline: bool = False,
    dotall: bool = False,
    count: int = 0,
) -> tuple[str]:
    flags = _flags(case_insensitive, multiline, dotall)
    return (re.sub(regex_pattern, replace, string, count=count, flags=flags),)


def preview_text(source: Any) -> str:
    """How ``PreviewAny`` shows a value: strings as is, numbers via ``str``, else JSON."""
    if isinstance(source, str):
        return source
    if isinstance(source, int | float | bool):
        return str(source)
    if source is None:
        return "None"
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        try:
            return str(source)
        except Exception:
            return "source exists, but could not be serialized."


@nodes.node("PreviewAny")
def preview_any(ctx: NodeContext, source: Any) -> NodeOutput:
    return NodeOutput((), {"text": [preview_text(source)]})

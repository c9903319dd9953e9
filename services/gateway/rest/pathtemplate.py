"""The path templates of ``google.api.HttpRule``: parsing, matching and specificity.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching works on the raw (still percent-encoded) request path, so an encoded slash inside a
single-segment variable stays inside it. Values are decoded as http.proto says: fully for a
variable of one segment, everything but ``%2F`` for a variable of several.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote


class TemplateError(ValueError):
    """A path template that does not follow the HttpRule grammar."""


class SegmentKind(IntEnum):
    """Ordered by how specific a segment is: a literal beats ``*``, which beats ``**``."""

    MULTI = 0
    SINGLE = 1
    LITERAL = 2


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    literal: str = ""


@dataclass(frozen=True)
class Variable:
    """A field path bound to the template segments ``start`` up to (not including) ``end``."""

    field_path: str
    start: int
    end: int


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str

    @property
    def rank(self) -> tuple[tuple[int, ...], bool]:
        """Sort key: the more specific template of two that both match sorts higher.

        Literal segments win over variables, left to right; at equal segments the template
        with a verb wins, so ``/v1/x/{id}:cancel`` beats ``/v1/x/{id}`` for ``/v1/x/a:cancel``.
        """
        return tuple(int(s.kind) for s in self.segments), bool(self.verb)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables' decoded values when ``raw_path`` (no query) matches, else None."""
        if not raw_path.startswith("/"):
            return None
        parts = raw_path[1:].split("/")
        if self.verb:
            suffix = ":" + self.verb
            if not parts[-1].endswith(suffix) or parts[-1] == suffix:
                return None
            parts[-1] = parts[-1][: -len(suffix)]
        if not self._segments_match(parts):
            return None
        return {v.field_path: self._value(v, parts) for v in self.variables}

    def _segments_match(self, parts: list[str]) -> bool:
        multi = bool(self.segments) and self.segments[-1].kind is SegmentKind.MULTI
        fixed = len(self.segments) - 1 if multi else len(self.segments)
        if len(parts) < fixed or (not multi and len(parts) != fixed):
            return False
        for segment, part in zip(self.segments[:fixed], parts, strict=False):
            if segment.kind is SegmentKind.LITERAL and unquote(part) != segment.literal:
                return False
            if segment.kind is SegmentKind.SINGLE and part == "":
                return False
        return True

    def _value(self, variable: Variable, parts: list[str]) -> str:
        multi = self.segments[variable.end - 1].kind is SegmentKind.MULTI
        taken = parts[variable.start :] if multi else parts[variable.start : variable.end]
        if len(taken) == 1 and not multi:
            return unquote(taken[0])
        return _unquote_keeping_slashes("/".join(taken))


_ENCODED_SLASH = re.compile("(%2[fF])")


def _unquote_keeping_slashes(raw: str) -> str:
    pieces = _ENCODED_SLASH.split(raw)
    return "".join(p if i % 2 else unquote(p) for i, p in enumerate(pieces))


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[^/{}*=]+")
_VERB = re.compile(r"[^/{}*=:]+")


def parse(template: str) -> PathTemplate:
    """Parses an HttpRule path such as ``/v1/{name=projects/*/things/*}:publish``."""
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    body, verb = _split_verb(template)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for token in _split_top_level(body[1:], template):
        if token.startswith("{"):
            variables.append(_parse_variable(token, len(segments), segments, template))
        else:
            segments.append(_parse_segment(token, template))
    _check_multi_is_last(segments, template)
    _check_unique(variables, template)
    return PathTemplate(template, tuple(segments), tuple(variables), verb)


def _split_verb(template: str) -> tuple[str, str]:
    """Separates a trailing ``:verb``: the last colon outside braces after the last slash."""
    depth = 0
    colon = -1
    for i, char in enumerate(template):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            colon = -1
        elif char == ":" and depth == 0:
            colon = i
    if colon < 0:
        return template, ""
    verb = template[colon + 1 :]
    if not _VERB.fullmatch(verb):
        raise TemplateError(f"path template {template!r} has an invalid verb {verb!r}")
    return template[:colon], verb


def _split_top_level(path: str, template: str) -> list[str]:
    """Splits on slashes that are not inside a variable's braces."""
    tokens: list[str] = []
    depth = 0
    current = ""
    for char in path:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth not in (0, 1):
            raise TemplateError(f"path template {template!r} has unbalanced or nested braces")
        if char == "/" and depth == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise TemplateError(f"path template {template!r} has unbalanced braces")
    tokens.append(current)
    return tokens


def _parse_segment(token: str, template: str) -> Segment:
    if token == "*":
        return Segment(SegmentKind.SINGLE)
    if token == "**":
        return Segment(SegmentKind.MULTI)
    if not _LITERAL.fullmatch(token):
        raise TemplateError(f"path template {template!r} has an invalid segment {token!r}")
    return Segment(SegmentKind.LITERAL, token)


def _parse_variable(token: str, start: int, segments: list[Segment], template: str) -> Variable:
    if not token.endswith("}"):
        raise TemplateError(f"path template {template!r} has an invalid variable {token!r}")
    field_path, _, sub = token[1:-1].partition("=")
    if not _IDENT.fullmatch(field_path):
        raise TemplateError(f"path template {template!r} has an invalid field path {field_path!r}")
    for part in (sub or "*").split("/"):
        segments.append(_parse_segment(part, template))
    return Variable(field_path, start, len(segments))


def _check_multi_is_last(segments: list[Segment], template: str) -> None:
    for segment in segments[:-1]:
        if segment.kind is SegmentKind.MULTI:
            raise TemplateError(f"path template {template!r} may use '**' only last")


def _check_unique(variables: list[Variable], template: str) -> None:
    names = [v.field_path for v in variables]
    if len(names) != len(set(names)):
        raise TemplateError(f"path template {template!r} binds a field twice")

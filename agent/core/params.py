"""Request parameters from every place a backend reads them, normalized.

Owns turning one `HttpRequest` into a `ParamSet`: route path segments and
`;path-params`, the query string, urlencoded / multipart / JSON bodies and
cookies. Names are decoded and lowercased; PHP-style `num[]`, `a[num]` and
JSON paths such as `a.num` are also found under their leaf name `num`, so a
detector asks `by_name("num")` once. Values are decoded (see
`normalize.py`); the raw value stays for the log. Bounded: at most
`max_params` parameters, malformed bodies degrade to best-effort scans.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from agent.core.decision import Where
from agent.core.http import HttpRequest
from agent.core.normalize import (
    DOUBLE_ENCODING,
    Decoded,
    NormalizedPath,
    decode_component,
    normalize_path,
)
from agent.core.routes import RouteMatcher

# Anomaly codes (text after ": " is detail).
TOO_MANY_PARAMS = "too_many_params"
JSON_MALFORMED = "json_malformed"
MULTIPART_MALFORMED = "multipart_malformed"
UNUSUAL_CHARSET = "unusual_charset"

# A scalar "key": value pair anywhere in (possibly broken) JSON text.
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.){0,256})"\s*:\s*("(?:[^"\\]|\\.)*"|[^,{}\[\]\s"]+)')
# The lookbehind starts a name only at the start of a token: without it every
# position inside a long `=`-less token rescans the token (quadratic; issue 8).
_DISPOSITION_PARAM = re.compile(r'(?<![\w*-])([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_COOKIE_SEPARATORS = re.compile(r"[\s,]+")
_BRACKETS = re.compile(r"\[([^\]]*)\]")
_JSON_TYPES = ("application/json", "text/json")
# Charsets back ends decode bodies with that hide ASCII names and values from
# byte matching: such a body is decoded with its charset before parsing. A short
# list of cheap codecs (a declared charset picks the codec: no costly ones).
_HIDING_CODECS = frozenset(
    {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7"}
    | {"cp037", "cp273", "cp500", "cp875", "cp1026", "cp1140"}
)
_PLAIN_CHARSETS = frozenset(
    {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "latin-1", "windows-1252"}
)


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter. `name` is the leaf name detectors match; `full_name` as sent."""

    name: str
    value: str
    raw: str
    where: Where
    double_encoded: bool = False
    full_name: str = ""


@dataclass(frozen=True, slots=True)
class ParamSet:
    params: tuple[Param, ...]
    anomalies: tuple[str, ...] = ()
    # Built on the first by_name(): many callers only iterate.
    _index: dict[str, tuple[Param, ...]] | None = field(default=None, compare=False, repr=False)

    def by_name(self, name: str) -> tuple[Param, ...]:
        """Every parameter whose leaf or full name is `name` (case-insensitive)."""
        index = self._index
        if index is None:
            index = _index(self.params)
            object.__setattr__(self, "_index", index)
        return index.get(name.lower(), ())

    @property
    def double_encoded(self) -> bool:
        return any(p.double_encoded for p in self.params)

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)


class _Collector:
    __slots__ = ("anomalies", "full", "limit", "params")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.params: list[Param] = []
        self.anomalies: dict[str, str] = {}
        self.full = False

    def add(self, param: Param) -> bool:
        """Keep a parameter; False once the limit is reached."""
        if len(self.params) >= self.limit:
            if not self.full:
                self.full = True
                self.anomalies[TOO_MANY_PARAMS] = f"over {self.limit}"
            return False
        self.params.append(param)
        return True

    def note(self, code: str, detail: str) -> None:
        self.anomalies.setdefault(code, detail)

    def encoded(self, raw_name: str, raw_value: str, where: Where, plus: bool) -> bool:
        """Add a percent-encoded name=value pair (query, form, cookie)."""
        plain_name = _plain(raw_name, plus)
        plain_value = _plain(raw_value, plus)
        if plain_name and plain_value:
            # Nothing to decode: the common case, kept cheap.
            full_name = raw_name.strip().lower()
            leaf = _leaf_name(full_name) if "[" in full_name else full_name
            return self.add(Param(leaf, raw_value, raw_value, where, False, full_name))
        decoded_name = _undecoded(raw_name) if plain_name else decode_component(raw_name, plus)
        decoded_value = _undecoded(raw_value) if plain_value else decode_component(raw_value, plus)
        for code in decoded_name.anomalies + decoded_value.anomalies:
            self.note(code, f"{where}:{raw_name}")
        full_name = decoded_name.value.strip().lower()
        double = decoded_name.double_encoded or decoded_value.double_encoded
        if double:
            self.note(DOUBLE_ENCODING, f"{where}:{raw_name}")
        return self.add(
            Param(_leaf_name(full_name), decoded_value.value, raw_value, where, double, full_name)
        )

    def build(self) -> ParamSet:
        if not self.anomalies:
            return ParamSet(tuple(self.params))
        anomalies = tuple(f"{code}: {detail}" for code, detail in self.anomalies.items())
        return ParamSet(tuple(self.params), anomalies)


def _index(params: tuple[Param, ...]) -> dict[str, tuple[Param, ...]]:
    """Leaf name, full name and base name (`a` of `a[num]`, `a.num`) -> parameters."""
    index: dict[str, list[Param]] = {}
    for param in params:
        index.setdefault(param.name, []).append(param)
        if param.full_name and param.full_name != param.name:
            index.setdefault(param.full_name, []).append(param)
            base = base_name(param.full_name)
            if base not in (param.name, param.full_name):
                index.setdefault(base, []).append(param)
    return {k: tuple(v) for k, v in index.items()}


def _undecoded(text: str) -> Decoded:
    return Decoded(text, False, ())


def _plain(text: str, plus: bool) -> bool:
    return (
        "%" not in text and (not plus or "+" not in text) and "\x00" not in text and text.isascii()
    )


def _leaf_name(full_name: str) -> str:
    """`num[]`, `num[0]` -> `num`; `a[num]`, `a[b][num]` -> `num`."""
    if "[" not in full_name:
        return full_name
    # Search only up to the last "]": each "[" after it would rescan to the end (quadratic).
    keys: list[str] = _BRACKETS.findall(full_name, 0, full_name.rfind("]") + 1)
    for key in reversed(keys):
        if key and not key.isdigit():
            return key
    return full_name.split("[", 1)[0]


def base_name(full_name: str) -> str:
    """`num` of `num[x]`, `num[0][y]`, `num.x`: the name a backend binds the whole value to."""
    return full_name.split("[", 1)[0].split(".", 1)[0]


def _pairs(text: str, into: _Collector, where: Where, plus: bool) -> None:
    """`a=1&b=2;c` pairs; a name without `=` has value ``."""
    if ";" in text:
        text = text.replace(";", "&")
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if not into.encoded(name, value, where, plus):
            return


def _query(target: str) -> str:
    at = target.find("?")
    if at < 0:
        return ""
    query = target[at + 1 :]
    hash_at = query.find("#")
    return query[:hash_at] if hash_at >= 0 else query


def _path(path: NormalizedPath, routes: RouteMatcher, into: _Collector) -> None:
    if len(routes):
        seen = routes.match(path.path)
        if path.alt_path is not None:
            seen = seen + tuple(p for p in routes.match(path.alt_path) if p not in seen)
        for name, value in seen:
            into.add(Param(name, value, value, Where.PATH, path.double_encoded, name))
    for text in path.path_params:
        for piece in text.split(";"):
            name, _, value = piece.partition("=")
            full_name = name.strip().lower()
            into.add(Param(_leaf_name(full_name), value, piece, Where.PATH, False, full_name))


def _cookies(request: HttpRequest, into: _Collector) -> None:
    for key, value in request.headers:
        if key != "cookie":
            continue
        for piece in value.split(";"):
            name, _, cookie = piece.strip().partition("=")
            if name and not into.encoded(name, cookie.strip('"'), Where.COOKIE, False):
                return
            if "=" in cookie and ("," in cookie or " " in cookie):
                # RFC 2109 and Python's http.cookies (Tornado) also split at commas
                # and blanks: `a=b, num=1'` holds a cookie num for them.
                for extra in _COOKIE_SEPARATORS.split(cookie)[1:]:
                    name, sep, rest = extra.partition("=")
                    if sep and name and not into.encoded(name, rest, Where.COOKIE, False):
                        return


# Bodies of these media types yield no parameter (see _body): opaque uploads.
_OPAQUE_MEDIA = frozenset(
    {"application/octet-stream", "application/zip", "application/gzip", "application/x-gzip",
     "application/x-tar", "application/pdf"}
)  # fmt: skip
_OPAQUE_MEDIA_PREFIXES = ("image/", "video/", "audio/", "font/")


def body_never_read(content_type: str | None) -> bool:
    """True when `extract_params` reads nothing from a body of this Content-Type (no
    charset either): the core's fast lane may then take the body's segments unparsed."""
    if not content_type or "charset" in content_type.lower():
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if "form" in media or "json" in media:
        return False
    return media in _OPAQUE_MEDIA or media.startswith(_OPAQUE_MEDIA_PREFIXES)


def _media_type(request: HttpRequest) -> tuple[str, str]:
    """(lowercased media type, full header value)."""
    value = request.header("content-type") or ""
    return value.split(";", 1)[0].strip().lower(), value


def _body(request: HttpRequest, into: _Collector) -> None:
    body = request.body
    media, content_type = _media_type(request)
    codec = _check_charset(content_type, into) if "charset" in content_type.lower() else None
    if media == "application/x-www-form-urlencoded":
        _pairs(_body_text(body, codec), into, Where.BODY, True)
    elif media == "multipart/form-data":
        _multipart(body, content_type, request.body_truncated, into)
    elif media in _JSON_TYPES or media.endswith("+json"):
        _json(body, into, codec)
    elif not media or media == "text/plain" or "form" in media or "json" in media:
        # A missing or odd type: backends differ, sniff like the most lenient one.
        head = body.lstrip()[:1]
        if head in (b"{", b"["):
            _json(body, into, codec)
        elif b"=" in body:
            _pairs(_body_text(body, codec), into, Where.BODY, True)


def _body_text(body: bytes, codec: str | None) -> str:
    if codec is None:
        return body.decode("utf-8", "surrogateescape")
    return body.decode(codec, "replace")


def _check_charset(content_type: str, into: _Collector) -> str | None:
    """Bodies in EBCDIC or UTF-16 (IIS/ASP.NET decode them) hide from byte matching.

    Reported; for the charsets in `_HIDING_CODECS` the codec to decode the body with.
    """
    for key, value in _DISPOSITION_PARAM.findall(content_type):
        if key.lower() == "charset":
            charset = _unquote(value).lower()
            if charset in _PLAIN_CHARSETS:
                return None
            into.note(UNUSUAL_CHARSET, charset)
            try:
                codec = codecs.lookup(charset).name
            except LookupError:
                return None
            return codec if codec in _HIDING_CODECS else None
    return None


def _json(body: bytes, into: _Collector, codec: str | None = None) -> None:
    # UTF-16/32 (BOM or NUL pattern) as RFC 4627 readers (Jackson, .NET, Python) detect it.
    text = body.decode(codec or json.detect_encoding(body), "replace")
    try:
        # Objects as tuples of pairs: a repeated key keeps every value (backends differ
        # on which one wins; a first-wins one must not read a value we never saw).
        document = json.loads(
            text, object_pairs_hook=tuple, parse_float=str, parse_int=str, parse_constant=str
        )
    except (ValueError, RecursionError):
        into.note(JSON_MALFORMED, "scanned for key/value pairs")
        for match in _JSON_PAIR.finditer(text):
            key, value = _json_unescape(match.group(1)), match.group(2)
            if value.startswith('"'):
                value = _json_unescape(value[1:-1])
            full_name = key.lower()
            if not into.add(Param(full_name, value, value, Where.BODY, False, full_name)):
                return
        return
    _flatten(document, into)


def _json_unescape(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        value = json.loads(f'"{text}"')
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _flatten(document: Any, into: _Collector) -> None:
    # Iterative: nesting depth is bounded by the body, not by Python's stack.
    pending: list[tuple[str, str, Any]] = [("", "", document)]
    while pending:
        name, full_name, node = pending.pop()
        if isinstance(node, tuple):  # an object (object_pairs_hook=tuple)
            for key, child in reversed(node):
                leaf = str(key).lower()
                pending.append((leaf, f"{full_name}.{leaf}" if full_name else leaf, child))
        elif isinstance(node, list):
            for i in range(len(node) - 1, -1, -1):
                pending.append((name, f"{full_name}[{i}]", node[i]))
        else:
            if node is None:
                value = "null"
            elif node is True or node is False:
                value = "true" if node else "false"
            else:
                value = str(node)
            if not into.add(Param(name, value, value, Where.BODY, False, full_name)):
                return


def _boundary(content_type: str) -> bytes | None:
    for key, value in _DISPOSITION_PARAM.findall(content_type):
        if key.lower() == "boundary":
            text = _unquote(value)
            return text.encode("latin-1", "replace") if text else None
    return None


def _unquote(value: str) -> str:
    text = value.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def _multipart(body: bytes, content_type: str, truncated: bool, into: _Collector) -> None:
    boundary = _boundary(content_type)
    if boundary is None:
        into.note(MULTIPART_MALFORMED, "no boundary")
        return
    delimiter = b"--" + boundary
    parts = body.split(delimiter)
    if len(parts) < 2:
        into.note(MULTIPART_MALFORMED, "no delimiter")
        return
    closed = False
    for part in parts[1:]:
        if part.startswith(b"--"):
            closed = True
            break
        head_end = part.find(b"\r\n\r\n")
        skip = 4
        if head_end < 0:
            head_end, skip = part.find(b"\n\n"), 2
            if head_end < 0:
                continue  # a part cut before its content (truncated body)
        head = part[:head_end].decode("latin-1")
        content = part[head_end + skip :]
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        names, is_file = _disposition(head)
        if is_file:
            continue  # file contents are not form values
        value = content.decode("utf-8", "replace")
        for name in names:
            full_name = name.lower()
            param = Param(_leaf_name(full_name), value, value, Where.BODY, False, full_name)
            if not into.add(param):
                return
    if not closed and not truncated:
        into.note(MULTIPART_MALFORMED, "no closing delimiter")


def _disposition(head: str) -> tuple[tuple[str, ...], bool]:
    """(form field names, whether the part is a file) from a part's headers.

    Every name the part gives (`name`, a repeated `name`, RFC 2231 `name*`): back
    ends differ on which one they read, so the value is inspected under each.
    """
    for line in head.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        names: dict[str, None] = {}
        is_file = False
        for param, param_value in _DISPOSITION_PARAM.findall(value):
            attribute = param.lower()
            if attribute == "name":
                names[_unquote(param_value)] = None
            elif attribute == "name*":
                names[_rfc2231_value(_unquote(param_value))] = None
            elif attribute.startswith("filename") and _unquote(param_value):
                # filename="" is a form value to Go's multipart reader, not a file.
                is_file = True
        return tuple(names), is_file
    return (), False


def _rfc2231_value(text: str) -> str:
    """`charset'language'percent-encoded` -> text (the charset is taken as UTF-8)."""
    parts = text.split("'", 2)
    encoded = parts[2] if len(parts) == 3 else text
    return unquote(encoded, encoding="utf-8", errors="replace")


def extract_params(
    request: HttpRequest,
    routes: RouteMatcher,
    max_params: int = 256,
    path: NormalizedPath | None = None,
) -> ParamSet:
    """All parameters of `request`; pass `path` if the caller normalized it already."""
    into = _Collector(max_params)
    target = request.target
    if path is None:
        path = normalize_path(target)
    _path(path, routes, into)
    query = _query(target)
    if query:
        _pairs(query, into, Where.QUERY, True)
    if request.body and not into.full:
        _body(request, into)
    if not into.full:
        _cookies(request, into)
    return into.build()

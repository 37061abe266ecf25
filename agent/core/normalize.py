"""Normalization of URL components for matching; the raw form stays for the log.

Owns percent-decoding (with double-encoding, IIS `%uXXXX`, overlong UTF-8
and NUL detection) and path canonicalization (backslashes, empty and dot
segments, `;params`, absolute-form targets). Every evasion trick that is
undone here is also reported, as an anomaly code, so the caller can flag it.

Input strings carry bytes as `str.encode("utf-8", "surrogateescape")` gives
them back: request targets are ASCII, bodies are decoded that way by
`params.py`, so no byte is lost or altered before decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Anomaly codes.
DOUBLE_ENCODING = "double_encoding"
DECODE_ROUNDS_EXCEEDED = "decode_rounds_exceeded"
PERCENT_U_ESCAPE = "percent_u_escape"
INVALID_PERCENT_ESCAPE = "invalid_percent_escape"
OVERLONG_UTF8 = "overlong_utf8"
INVALID_UTF8 = "invalid_utf8"
NUL_BYTE = "nul_byte"
BACKSLASH = "backslash"
ENCODED_SLASH = "encoded_slash"
DOT_SEGMENT = "dot_segment"
PATH_ABOVE_ROOT = "path_above_root"

MAX_DECODE_ROUNDS = 3

_ESCAPE = re.compile(rb"%(?:([0-9A-Fa-f]{2})|[uU]([0-9A-Fa-f]{4}))")
_ANY_ESCAPE_TEXT = re.compile(r"%(?:[0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
_PERCENT_U = re.compile(rb"%[uU][0-9A-Fa-f]{4}")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
_ENCODED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
# A path needs the slow route only if it has one of these.
_PATH_WORK = re.compile(r"[%\\;\x00]|//|/\.")
_NO_ANOMALIES: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decoded:
    value: str
    double_encoded: bool
    anomalies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """A request path made canonical for matching.

    `path` has `;params` removed from segments (as Java servers do);
    `alt_path` is the same path with them kept (as Go and most others do),
    or None when there were none. `path_params` are the removed texts.
    """

    path: str
    raw: str
    anomalies: tuple[str, ...] = ()
    double_encoded: bool = False
    path_params: tuple[str, ...] = ()
    alt_path: str | None = None

    @property
    def path_lower(self) -> str:
        return self.path.lower()


def _unescape(match: re.Match[bytes]) -> bytes:
    pair, wide = match.group(1), match.group(2)
    if pair is not None:
        return bytes((int(pair, 16),))
    code = int(wide, 16)
    if 0xD800 <= code <= 0xDFFF:
        return b"\xef\xbf\xbd"  # a lone surrogate: same as invalid UTF-8
    return chr(code).encode("utf-8")


def _utf8_lenient(data: bytes, found: list[str]) -> str:
    """UTF-8 decoding that also accepts overlong forms (as old decoders did)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i, n = 0, len(data)
    overlong = invalid = False
    while i < n:
        lead = data[i]
        if lead < 0x80:
            out.append(chr(lead))
            i += 1
            continue
        if 0xC0 <= lead <= 0xDF:
            need, code, least = 1, lead & 0x1F, 0x80
        elif 0xE0 <= lead <= 0xEF:
            need, code, least = 2, lead & 0x0F, 0x800
        elif 0xF0 <= lead <= 0xF7:
            need, code, least = 3, lead & 0x07, 0x10000
        else:
            out.append("\ufffd")
            invalid = True
            i += 1
            continue
        tail = data[i + 1 : i + 1 + need]
        if len(tail) < need or any(b & 0xC0 != 0x80 for b in tail):
            out.append("\ufffd")
            invalid = True
            i += 1
            continue
        for b in tail:
            code = (code << 6) | (b & 0x3F)
        i += 1 + need
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
            invalid = True
            continue
        if code < least:
            overlong = True
        out.append(chr(code))
    if overlong:
        found.append(OVERLONG_UTF8)
    if invalid:
        found.append(INVALID_UTF8)
    return "".join(out)


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A lone surrogate that stands for no byte: encoded as is, decoded as invalid.
        return text.encode("utf-8", "surrogatepass")


def decode_component(raw: str, plus_as_space: bool) -> Decoded:
    """Percent-decode a path, query or form component until it is stable.

    Decoding that takes more than one round means the sender encoded twice
    (`%2527` -> `'`): reported as `double_encoded`. `+` is a space only in
    the query and form bodies (`plus_as_space`), never after round one.
    """
    if "%" not in raw and "\x00" not in raw and raw.isascii():
        value = raw.replace("+", " ") if plus_as_space and "+" in raw else raw
        return Decoded(value, False, _NO_ANOMALIES)
    found: list[str] = []
    text = raw
    rounds = 0
    while True:
        data = _to_bytes(text)
        if rounds == 0 and plus_as_space:
            data = data.replace(b"+", b" ")
        if rounds == 0 and _BAD_ESCAPE.search(data):
            found.append(INVALID_PERCENT_ESCAPE)
        if (b"%u" in data or b"%U" in data) and _PERCENT_U.search(data):
            found.append(PERCENT_U_ESCAPE)
        text = _utf8_lenient(_ESCAPE.sub(_unescape, data), found)
        rounds += 1
        if "%" not in text or not _ANY_ESCAPE_TEXT.search(text):
            break
        if rounds >= MAX_DECODE_ROUNDS:
            found.append(DECODE_ROUNDS_EXCEEDED)
            break
    if "\x00" in text:
        text = text.replace("\x00", "")
        found.append(NUL_BYTE)
    return Decoded(text, rounds > 1, tuple(dict.fromkeys(found)) if found else _NO_ANOMALIES)


def _path_part(target: str) -> str:
    """The path of a request target: no query or fragment, no scheme or authority."""
    end = len(target)
    for mark in ("?", "#"):
        at = target.find(mark, 0, end)
        if at >= 0:
            end = at
    path = target[:end]
    if path.startswith("/") or path == "*":
        return path
    scheme_end = path.find("://")
    if scheme_end > 0:
        slash = path.find("/", scheme_end + 3)
        return path[slash:] if slash >= 0 else "/"
    if "/" not in path:
        return ""  # authority-form (CONNECT host:port) has no path
    return "/" + path


def _remove_dots(segments: list[str], found: list[str]) -> tuple[list[str], bool]:
    """RFC 3986 5.2.4 on split segments; never climbs above the root.

    Returns the kept segments and whether the path ends in a directory.
    """
    kept: list[str] = []
    trailing = False
    for segment in segments:
        trailing = False
        if segment in {".", ".."}:
            if DOT_SEGMENT not in found:
                found.append(DOT_SEGMENT)
            if segment == "..":
                if kept:
                    kept.pop()
                elif PATH_ABOVE_ROOT not in found:
                    found.append(PATH_ABOVE_ROOT)
            trailing = True
        elif segment:
            kept.append(segment)
        else:
            trailing = True  # an empty segment: `//` collapses, a final `/` stays
    return kept, trailing


def _join(kept: list[str], trailing: bool) -> str:
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing else "")


def normalize_path(raw_path: str) -> NormalizedPath:
    """Canonical path of a raw request target (or path) for matching."""
    path = _path_part(raw_path)
    if not _PATH_WORK.search(path) and not path.endswith("/."):
        return NormalizedPath(path, raw_path)
    found: list[str] = []
    decoded = decode_component(path, plus_as_space=False)
    found.extend(decoded.anomalies)
    if decoded.double_encoded:
        found.append(DOUBLE_ENCODING)
    if _ENCODED_SLASH.search(path):
        found.append(ENCODED_SLASH)
    text = decoded.value
    if "\\" in text:
        text = text.replace("\\", "/")
        found.append(BACKSLASH)
    segments = text.split("/")
    has_params = ";" in text
    params: list[str] = []
    alt_path: str | None = None
    if has_params:
        alt_kept, alt_trailing = _remove_dots(list(segments), [])
        alt_path = _join(alt_kept, alt_trailing)
        for i, segment in enumerate(segments):
            base, sep, rest = segment.partition(";")
            if sep:
                segments[i] = base
                if rest:
                    params.append(rest)
    kept, trailing = _remove_dots(segments, found)
    normalized = _join(kept, trailing)
    if alt_path == normalized:
        alt_path = None
    return NormalizedPath(
        path=normalized,
        raw=raw_path,
        anomalies=tuple(found),
        double_encoded=decoded.double_encoded,
        path_params=tuple(params),
        alt_path=alt_path,
    )

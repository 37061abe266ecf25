"""Incremental HTTP/1.x request parsing for one client->server flow.

Owns framing only: which bytes form which request, and whether that framing
is trustworthy. Normalization and parameter extraction live in
`normalize.py` and `params.py`. llhttp (via httptools) parses in its default
strict mode, which already rejects CL+TE, duplicate Content-Length, bare LF,
obs-fold, bad tokens and non-HTTP bytes; this module adds the checks llhttp
lets through (duplicate Host, Transfer-Encoding on HTTP/1.0, underscore
lookalikes of framing headers, absolute-form host mismatch, framing headers
in trailers...) and bounds what a flow can make us keep.

Results never depend on how the stream is cut into chunks: a request only
carries parser output that is complete whatever the cut (llhttp flushes
partial spans at the end of each chunk but not at an error), so feeding the
bytes whole, one by one or at random splits yields identical requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import httptools

# Anomaly codes; text after ": " is detail for the log.
PARSE_ERROR = "parse_error"
HEAD_TOO_LARGE = "head_too_large"
TOO_MANY_HEADERS = "too_many_headers"
MULTIPLE_HOST = "multiple_host"
MISSING_HOST = "missing_host"
MULTIPLE_CONTENT_TYPE = "multiple_content_type"
UNEXPECTED_VERSION = "unexpected_version"
TE_ON_HTTP10 = "transfer_encoding_on_http10"
FRAMING_HEADER_LOOKALIKE = "framing_header_lookalike"
ABSOLUTE_FORM_HOST_MISMATCH = "absolute_form_host_mismatch"
FRAMING_TRAILER = "framing_header_in_trailer"
UPGRADE_WITH_BODY = "upgrade_with_body"
REQUEST_AFTER_UPGRADE = "request_after_upgrade"

_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host"})
_KNOWN_VERSIONS = frozenset({"1.0", "1.1"})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request of a flow, as far as it was seen.

    `target` is the raw request target; header names are lowercased, values
    stripped of surrounding blanks, order and duplicates kept. `body` is
    de-chunked and capped. `complete` is False for a request cut by the end
    of inspection or rejected by the parser (then `anomalies` says why).
    """

    seq: int
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    host: str | None
    body: bytes
    body_truncated: bool
    complete: bool
    anomalies: tuple[str, ...] = ()
    trailers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def parse_failed(self) -> bool:
        return any(
            a.startswith((PARSE_ERROR, HEAD_TOO_LARGE, TOO_MANY_HEADERS)) for a in self.anomalies
        )


class _StopParsingError(Exception):
    """Raised in a parser callback to stop llhttp on one of our own limits."""


class _Collector:
    """httptools callback target: accumulates the request being parsed."""

    __slots__ = (
        "body",
        "body_seen",
        "completed",
        "head_bytes",
        "head_done",
        "head_view",
        "headers",
        "in_message",
        "keep_alive",
        "max_body",
        "max_head",
        "max_headers",
        "parser",
        "seq",
        "stop_reason",
        "trailers",
        "url_parts",
        "version",
    )

    def __init__(self, first_seq: int, max_body: int, max_head: int, max_headers: int) -> None:
        self.seq = first_seq - 1
        self.max_body = max_body
        self.max_head = max_head
        self.max_headers = max_headers
        self.completed: list[HttpRequest] = []
        self.stop_reason: str | None = None
        self.keep_alive = True  # whether llhttp takes a request after the last complete one
        self.parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self.in_message = False
        self.head_done = False
        self.head_view: HttpRequest | None = None
        self.url_parts: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_seen = 0
        self.head_bytes = 0
        self.version = ""

    # --- llhttp callbacks (names fixed by httptools) ----------------------
    def on_message_begin(self) -> None:
        self._reset()
        self.in_message = True
        self.seq += 1

    def on_url(self, part: bytes) -> None:
        self.url_parts.append(part)
        self.head_bytes += len(part)
        if self.head_bytes > self.max_head:
            self.stop_reason = f"{HEAD_TOO_LARGE}: request target over {self.max_head} bytes"
            self.url_parts.clear()  # a partial target depends on the chunking
            raise _StopParsingError

    def on_header(self, name: bytes, value: bytes) -> None:
        # Kept raw: decoding once per build is cheaper than per callback.
        self.head_bytes += len(name) + len(value) + 4
        if self.head_done:
            self.trailers.append((name, value))
        else:
            self.headers.append((name, value))
        if self.head_bytes > self.max_head:
            self.stop_reason = f"{HEAD_TOO_LARGE}: head over {self.max_head} bytes"
            raise _StopParsingError
        if len(self.headers) > self.max_headers:
            self.stop_reason = f"{TOO_MANY_HEADERS}: over {self.max_headers}"
            raise _StopParsingError

    def on_headers_complete(self) -> None:
        self.version = self.parser.get_http_version()
        self.head_done = True

    def on_body(self, part: bytes) -> None:
        room = self.max_body - self.body_seen
        if room > 0:
            self.body.append(part if len(part) <= room else part[:room])
        self.body_seen += len(part)

    def on_message_complete(self) -> None:
        self.completed.append(self.build(complete=True))
        self.in_message = False
        # Read here: llhttp clears the flags it answers from once the message is done.
        self.keep_alive = bool(self.parser.should_keep_alive())

    # --- building ---------------------------------------------------------
    def build(
        self,
        complete: bool,
        *,
        extra: tuple[str, ...] = (),
        keep_method: bool = True,
        keep_target: bool = True,
        keep_headers: bool = True,
        method_parsed: bool = False,
        head_only: bool = False,
    ) -> HttpRequest:
        # llhttp has parsed the method once the URL starts; before that
        # get_method() answers a default.
        method = (
            self.parser.get_method().decode("latin-1")
            if keep_method and (self.url_parts or self.head_done or method_parsed)
            else ""
        )
        target = b"".join(self.url_parts).decode("latin-1") if keep_target else ""
        headers = _decode_headers(self.headers) if keep_headers else ()
        with_rest = keep_headers and not head_only
        trailers = _decode_headers(self.trailers) if with_rest and self.trailers else ()
        host, anomalies = _inspect_head(self.version, target, headers, self.head_done)
        if trailers:
            anomalies += tuple(
                f"{FRAMING_TRAILER}: {name}" for name, _ in trailers if name in _FRAMING_HEADERS
            )
        return HttpRequest(
            seq=self.seq,
            method=method,
            target=target,
            version=self.version,
            headers=headers,
            host=host,
            body=b"".join(self.body) if self.body and not head_only else b"",
            body_truncated=self.body_seen > self.max_body and not head_only,
            complete=complete,
            anomalies=anomalies + extra if extra else anomalies,
            trailers=trailers,
        )

    def build_failed(self, reason: str, error: Exception | None) -> HttpRequest:
        """The request llhttp (or a limit) rejected, with only chunking-proof fields."""
        if not self.in_message:
            return HttpRequest(self.seq + 1, "", "", "", (), None, b"", False, False, (reason,))
        bad_method = isinstance(error, httptools.HttpParserInvalidMethodError)
        # An error inside the URL or an unfinished head hides partial spans that a
        # split stream would have flushed: drop what the cut could change.
        bad_url = bad_method or isinstance(error, httptools.HttpParserInvalidURLError)
        return self.build(
            complete=False,
            extra=(reason,),
            keep_method=not bad_method,
            keep_target=not bad_url,
            keep_headers=self.head_done,
            method_parsed=bad_url and not bad_method,
        )


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Names lowercased; values without the trailing blanks llhttp leaves."""
    return tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1").rstrip(" \t"))
        for name, value in raw
    )


def _inspect_head(
    version: str, target: str, headers: tuple[tuple[str, str], ...], head_done: bool
) -> tuple[str | None, tuple[str, ...]]:
    """The first Host, and what llhttp's strict mode accepts but a smuggler would use."""
    host: str | None = None
    hosts = content_types = 0
    found: list[str] = []
    for name, value in headers:
        if name == "host":
            hosts += 1
            if host is None:
                host = value
        elif name == "transfer-encoding":
            if version == "1.0":
                found.append(TE_ON_HTTP10)
        elif name == "content-type":
            content_types += 1
        elif "_" in name and name.replace("_", "-") in _FRAMING_HEADERS:
            found.append(f"{FRAMING_HEADER_LOOKALIKE}: {name}")
    if not head_done:
        return host, ()  # judged once the head is complete
    if version not in _KNOWN_VERSIONS:
        found.append(f"{UNEXPECTED_VERSION}: HTTP/{version}")
    if hosts > 1:
        found.append(f"{MULTIPLE_HOST}: {hosts}")
    if content_types > 1:
        found.append(f"{MULTIPLE_CONTENT_TYPE}: {content_types}")
    if host is None and version == "1.1":
        found.append(MISSING_HOST)
    if host is not None and target[:1] not in ("/", "*", "") and "://" in target:
        authority = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        authority = authority.rsplit("@", 1)[-1]
        if authority.lower() != host.lower():
            found.append(f"{ABSOLUTE_FORM_HOST_MISMATCH}: {authority} vs {host}")
    return host, tuple(found) if found else ()


# The first 4 bytes of a request line, for every method worth inspecting. The
# kernel queues segments that start with one past the inspection depth, and the
# core restarts a stream there.
HTTP_REQUEST_STARTS: tuple[bytes, ...] = (
    b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI", b"CONN", b"TRAC",
)  # fmt: skip


def starts_request(payload: bytes) -> bool:
    """Whether a segment begins like a request line (or the CRLF some clients put before one)."""
    return payload[:4] in HTTP_REQUEST_STARTS or payload[:2] == b"\r\n"


class HttpRequestStream:
    """Parses one flow's client->server bytes into requests, chunk by chunk.

    Each request gets `seq` 0, 1, 2... in flow order. After a parse error the
    stream stops: every later byte is untrusted and the failed request (with
    a `parse_error` anomaly) is the last one reported. After an upgrade
    (CONNECT, `Upgrade:`) it keeps trying HTTP, since the server may refuse
    the upgrade and read on: requests found there carry
    `request_after_upgrade`; tunnelled bytes that are not HTTP end parsing
    quietly.
    """

    __slots__ = (
        "_collector",
        "_finished",
        "_last_byte",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_stopped",
        "_tunnel",
        "_upgrade_body",
        "_upgrade_body_left",
        "_upgrade_body_seen",
        "_upgrade_request",
    )

    def __init__(
        self, max_body: int = 16384, max_head: int = 32768, max_headers: int = 128
    ) -> None:
        self._max_body = max_body
        self._max_head = max_head
        self._max_headers = max_headers
        self._collector = _Collector(0, max_body, max_head, max_headers)
        self._stopped = False
        self._finished = False
        self._tunnel = False
        # An upgrade request with a Content-Length body: llhttp leaves the body to us.
        self._upgrade_request: HttpRequest | None = None
        self._upgrade_body: list[bytes] = []
        self._upgrade_body_seen = 0
        self._upgrade_body_left = 0
        self._last_byte = -1  # of the bytes fed so far

    @property
    def stopped(self) -> bool:
        """True once nothing more will be parsed (error, non-HTTP tunnel, finish)."""
        return self._stopped

    @property
    def idle(self) -> bool:
        """True between requests: every byte fed so far belongs to a completed request."""
        return (
            not self._stopped
            and self._upgrade_request is None
            and not self._tunnel
            and not self._collector.in_message
        )

    @property
    def keeps_alive(self) -> bool:
        """True when llhttp takes another request after the last one (no `Connection: close`)."""
        return self._collector.keep_alive

    @property
    def in_head(self) -> bool:
        """True while a request has started and its head is not complete."""
        collector = self._collector
        return (
            not self._stopped
            and self._upgrade_request is None
            and collector.in_message
            and not collector.head_done
        )

    def feed(self, data: bytes) -> list[HttpRequest]:
        """Parse a chunk; return the requests it completed, in order (a failed one last)."""
        out: list[HttpRequest] = []
        if data:
            self._last_byte = data[-1]
        while data and not self._stopped:
            if self._upgrade_request is not None:
                data = self._take_upgrade_body(data, out)
            else:
                data = self._feed_parser(data, out)
        return out

    def body_left(self) -> int | None:
        """Bytes still to come of the body of the request in progress, when its head is
        done and its body is framed by Content-Length (no chunks, no upgrade); else None."""
        collector = self._collector
        if (
            self._stopped
            or self._tunnel
            or self._upgrade_request is not None
            or not collector.in_message
            or not collector.head_done
        ):
            return None
        lengths = [value for name, value in collector.headers if name.lower() == b"content-length"]
        if len(lengths) != 1 or any(
            name.lower() == b"transfer-encoding" for name, _ in collector.headers
        ):
            return None
        text = lengths[0].strip()
        if not text.isdigit():
            return None
        left = int(text) - collector.body_seen
        return left if left > 0 else None

    def head_pending(self) -> HttpRequest | None:
        """The request whose head is complete but body is not yet, if any.

        Its `body` is empty; the same `seq` comes again, complete, from feed().
        """
        if self._stopped:
            return None
        if self._upgrade_request is not None:
            return replace(self._upgrade_request, complete=False)
        collector = self._collector
        if not collector.in_message:
            return None
        if not collector.head_done:
            return self._simple_request(collector)
        if collector.head_view is None:
            # Built once per request: callers ask after every chunk of a long body.
            collector.head_view = collector.build(complete=False, head_only=True)
        return collector.head_view

    def _simple_request(self, collector: _Collector) -> HttpRequest | None:
        """A request line without a version, ended, nothing after it: HTTP/0.9.

        llhttp waits for a blank line, but a server that still takes HTTP/0.9
        (nginx) acts on the line alone. Its headers may follow (HTTP/1.x
        without a version), so this view does not replace the complete request.
        """
        if (
            self._last_byte != 0x0A  # "\n": the line has ended
            or not collector.url_parts
            or collector.headers
            or collector.parser.get_http_version() != "0.0"
        ):
            return None
        view = collector.build(complete=False, head_only=True)
        return replace(view, version="0.9", anomalies=(f"{UNEXPECTED_VERSION}: HTTP/0.9",))

    def finish(self) -> list[HttpRequest]:
        """End of inspection (depth or flow end): the request in progress, incomplete."""
        if self._finished:
            return []
        self._finished = True
        was_stopped = self._stopped
        self._stopped = True
        if was_stopped:
            return []
        if self._upgrade_request is not None:
            return [self._upgrade_with_body(complete=False)]
        collector = self._collector
        if not collector.in_message:
            return []
        request = collector.build(complete=False)
        return [self._mark_tunnel(request)]

    # --- internals --------------------------------------------------------
    def _feed_parser(self, data: bytes, out: list[HttpRequest]) -> bytes:
        collector = self._collector
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._drain(out)
            self._start_tunnel(out)
            return data[int(upgrade.args[0]) :]
        except httptools.HttpParserError as error:
            self._drain(out)
            self._stopped = True
            if collector.stop_reason is not None:
                out.append(collector.build_failed(collector.stop_reason, None))
            elif self._tunnel and isinstance(error, httptools.HttpParserInvalidMethodError):
                pass  # tunnelled bytes that are not HTTP: the normal case after an upgrade
            else:
                reason = f"{PARSE_ERROR}: {error or type(error).__name__}"
                out.append(self._mark_tunnel(collector.build_failed(reason, error)))
            return b""
        self._drain(out)
        return b""

    def _drain(self, out: list[HttpRequest]) -> None:
        completed = self._collector.completed
        if completed:
            if self._tunnel:
                out.extend(self._mark_tunnel(request) for request in completed)
            else:
                out.extend(completed)
            completed.clear()

    def _mark_tunnel(self, request: HttpRequest) -> HttpRequest:
        if not self._tunnel:
            return request
        return replace(request, anomalies=(*request.anomalies, REQUEST_AFTER_UPGRADE))

    def _start_tunnel(self, out: list[HttpRequest]) -> None:
        """The last completed request asked for an upgrade: continue on a fresh parser."""
        if not out:  # pragma: no cover - llhttp completes the message before pausing
            self._stopped = True
            return
        request = out[-1]
        self._tunnel = True
        self._collector = _Collector(
            request.seq + 1, self._max_body, self._max_head, self._max_headers
        )
        if request.header("transfer-encoding") is not None:
            # A chunked upgrade body is outside llhttp's reach: framing untrusted.
            out[-1] = replace(
                request,
                complete=False,
                anomalies=(*request.anomalies, f"{PARSE_ERROR}: chunked upgrade request"),
            )
            self._stopped = True
            return
        length_text = request.header("content-length") or "0"
        # isascii: str.isdigit() accepts '²', which int() refuses.
        length = int(length_text) if length_text.isascii() and length_text.isdigit() else 0
        if length > 0:
            out.pop()
            self._upgrade_request = request
            self._upgrade_body_left = length

    def _take_upgrade_body(self, data: bytes, out: list[HttpRequest]) -> bytes:
        take = min(self._upgrade_body_left, len(data))
        room = self._max_body - self._upgrade_body_seen
        if room > 0:
            self._upgrade_body.append(data[: min(take, room)])
        self._upgrade_body_seen += take
        self._upgrade_body_left -= take
        if self._upgrade_body_left == 0:
            out.append(self._upgrade_with_body(complete=True))
        return data[take:]

    def _upgrade_with_body(self, complete: bool) -> HttpRequest:
        request = self._upgrade_request
        assert request is not None
        self._upgrade_request = None
        return replace(
            request,
            body=b"".join(self._upgrade_body),
            body_truncated=self._upgrade_body_seen > self._max_body,
            complete=complete,
            anomalies=(*request.anomalies, UPGRADE_WITH_BODY),
        )

"""HttpRequestStream: framing, pipelining, limits, smuggling-style anomalies."""

from __future__ import annotations

import pytest

from agent.core.http import (
    ABSOLUTE_FORM_HOST_MISMATCH,
    FRAMING_HEADER_LOOKALIKE,
    FRAMING_TRAILER,
    HEAD_TOO_LARGE,
    MISSING_HOST,
    MULTIPLE_CONTENT_TYPE,
    MULTIPLE_HOST,
    PARSE_ERROR,
    REQUEST_AFTER_UPGRADE,
    TE_ON_HTTP10,
    TOO_MANY_HEADERS,
    UNEXPECTED_VERSION,
    UPGRADE_WITH_BODY,
    HttpRequest,
    HttpRequestStream,
)

GET_H = b"GET / HTTP/1.1\r\nHost: h\r\n"
POST_H = b"POST / HTTP/1.1\r\nHost: h\r\n"


def parse(data: bytes, **kwargs: int) -> list[HttpRequest]:
    stream = HttpRequestStream(**kwargs)
    return stream.feed(data) + stream.finish()


def codes(request: HttpRequest) -> list[str]:
    return [a.split(":", 1)[0] for a in request.anomalies]


def test_simple_get() -> None:
    [request] = parse(b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com\r\nX-Y:  v \r\n\r\n")
    assert request.seq == 0
    assert request.method == "GET"
    assert request.target == "/a/b?x=1"
    assert request.version == "1.1"
    assert request.headers == (("host", "Example.com"), ("x-y", "v"))
    assert request.host == "Example.com"
    assert request.body == b""
    assert request.complete
    assert request.anomalies == ()


def test_pipelined_requests_come_out_in_order_with_seq() -> None:
    data = (
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    requests = parse(data)
    assert [(r.seq, r.method, r.target, r.body) for r in requests] == [
        (0, "GET", "/1", b""),
        (1, "POST", "/2", b"abc"),
        (2, "GET", "/3", b""),
    ]
    assert all(r.complete for r in requests)


def test_chunked_body_is_dechunked_across_chunks() -> None:
    stream = HttpRequestStream()
    head = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert stream.feed(head + b"4\r\nnum=") == []
    assert stream.feed(b"\r\n3;ext=1\r\n1'") == []
    [request] = stream.feed(b"-\r\n0\r\n\r\n")
    assert request.body == b"num=1'-"
    assert request.complete


def test_head_pending_before_body_then_complete_with_same_seq() -> None:
    stream = HttpRequestStream()
    assert stream.feed(b"POST /x?num=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab") == []
    pending = stream.head_pending()
    assert pending is not None
    assert (pending.seq, pending.target) == (0, "/x?num=1")
    assert (pending.complete, pending.body) == (False, b"")
    [request] = stream.feed(b"cdef")
    assert request.seq == pending.seq
    assert request.body == b"abcdef"
    assert stream.head_pending() is None


def test_head_pending_none_while_head_incomplete() -> None:
    stream = HttpRequestStream()
    stream.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n")
    assert stream.head_pending() is None


def test_finish_reports_partial_request() -> None:
    stream = HttpRequestStream()
    stream.feed(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nnum=1")
    [request] = stream.finish()
    assert not request.complete
    assert request.body == b"num=1"
    assert request.target == "/x"
    assert stream.finish() == []
    assert stream.feed(b"more") == []


def test_finish_reports_partial_head() -> None:
    stream = HttpRequestStream()
    stream.feed(b"GET /api/totals/last/1%20or")
    [request] = stream.finish()
    assert (request.method, request.target) == ("GET", "/api/totals/last/1%20or")
    assert not request.complete


def test_finish_without_request_in_progress() -> None:
    stream = HttpRequestStream()
    assert stream.feed(GET_H + b"\r\n") != []
    assert stream.finish() == []


def test_body_capped_and_marked_truncated() -> None:
    [request] = parse(POST_H + b"Content-Length: 10\r\n\r\n0123456789", max_body=4)
    assert request.body == b"0123"
    assert request.body_truncated
    assert request.complete


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cl+te", POST_H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("te+cl", POST_H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ("dup-cl-same", POST_H + b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"),
        ("dup-cl-diff", POST_H + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("cl-list", POST_H + b"Content-Length: 4, 4\r\n\r\nabcd"),
        ("bare-lf", b"GET / HTTP/1.1\nHost: h\n\n"),
        ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"),
        ("obs-fold", GET_H + b"X: a\r\n b\r\n\r\n"),
        ("space-before-colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
        ("te-space-before-colon", POST_H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("te-not-chunked", POST_H + b"Transfer-Encoding: gzip\r\n\r\nabc"),
        ("te-twice", POST_H + b"Transfer-Encoding: chunked\r\n" * 2 + b"\r\n0\r\n\r\n"),
        ("bad-chunk-size", POST_H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("chunk-bare-lf", POST_H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"),
        ("bad-method-char", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("ctl-in-target", b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("nul-in-header", b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n"),
        ("non-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        ("ssh", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("negative-cl", POST_H + b"Content-Length: -1\r\n\r\n"),
        ("data-after-close", GET_H + b"Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
    ],
)
def test_parser_rejections_are_reported_and_stop_the_stream(name: str, data: bytes) -> None:
    stream = HttpRequestStream()
    requests = stream.feed(data)
    assert requests, name
    failed = requests[-1]
    assert failed.anomalies[-1].startswith(PARSE_ERROR + ": ")
    assert failed.parse_failed
    assert not failed.complete
    assert all(not r.parse_failed for r in requests[:-1])
    assert stream.stopped
    assert stream.feed(GET_H + b"\r\n") == []
    assert stream.finish() == []


def test_failed_request_keeps_request_line_when_known() -> None:
    [failed] = parse(
        b"POST /login HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    assert (failed.seq, failed.method, failed.target) == (0, "POST", "/login")
    assert "Duplicate Content-Length" in failed.anomalies[-1]


def test_garbage_after_a_good_request_fails_as_the_next_seq() -> None:
    good, failed = parse(GET_H + b"\r\n\x00\x01\x02")
    assert good.complete and not good.anomalies
    assert failed.seq == 1
    assert failed.method == ""
    assert failed.parse_failed


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", MULTIPLE_HOST),
        (b"GET / HTTP/1.1\r\n\r\n", MISSING_HOST),
        (POST_H + b"Content-Type: a/b\r\nContent-Type: c/d\r\n\r\n", MULTIPLE_CONTENT_TYPE),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", TE_ON_HTTP10),
        (POST_H + b"Content_Length: 3\r\n\r\n", FRAMING_HEADER_LOOKALIKE),
        (GET_H + b"Transfer_Encoding: chunked\r\n\r\n", FRAMING_HEADER_LOOKALIKE),
        (
            b"GET http://evil.example/a HTTP/1.1\r\nHost: good.example\r\n\r\n",
            ABSOLUTE_FORM_HOST_MISMATCH,
        ),
        (b"GET /\r\n\r\n", UNEXPECTED_VERSION),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", UNEXPECTED_VERSION),
        (
            POST_H + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nHost: other\r\n\r\n",
            FRAMING_TRAILER,
        ),
    ],
)
def test_own_checks_for_what_llhttp_accepts(data: bytes, code: str) -> None:
    [request] = parse(data)
    assert request.complete
    assert code in codes(request)


def test_absolute_form_with_matching_host_is_clean() -> None:
    [request] = parse(b"GET http://Good.example/a HTTP/1.1\r\nHost: good.example\r\n\r\n")
    assert request.anomalies == ()


def test_http10_without_host_is_clean() -> None:
    [request] = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert request.anomalies == ()
    assert request.version == "1.0"


def test_trailers_kept_apart_from_headers() -> None:
    [request] = parse(POST_H + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n")
    assert request.trailers == (("x-t", "1"),)
    assert ("x-t", "1") not in request.headers
    assert request.anomalies == ()


def test_head_size_limit() -> None:
    data = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    [failed] = parse(data, max_head=1024)
    assert codes(failed) == [HEAD_TOO_LARGE]
    assert failed.target == ""
    assert failed.parse_failed


def test_header_count_limit() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n"
    [failed] = parse(data, max_headers=10)
    assert codes(failed) == [TOO_MANY_HEADERS]
    assert failed.target == "/"


def test_websocket_upgrade_then_frames_ends_quietly() -> None:
    stream = HttpRequestStream()
    data = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    [request] = stream.feed(data + b"\x81\x85abcd12345")
    assert request.complete and request.anomalies == ()
    assert stream.stopped
    assert stream.finish() == []


def test_connect_tunnel_with_tls_ends_quietly() -> None:
    stream = HttpRequestStream()
    [request] = stream.feed(
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n\x16\x03\x01"
    )
    assert (request.method, request.target) == ("CONNECT", "a.example:443")
    assert stream.stopped


def test_requests_after_refused_upgrade_are_still_parsed() -> None:
    data = (
        GET_H + b"Connection: Upgrade\r\nUpgrade: foo\r\n\r\n"
        b"GET /api/totals/last/1%20or%201=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    first, second = parse(data)
    assert first.anomalies == ()
    assert second.seq == 1
    assert second.target == "/api/totals/last/1%20or%201=1"
    assert REQUEST_AFTER_UPGRADE in codes(second)


def test_upgrade_request_body_is_read_not_skipped() -> None:
    data = (
        POST_H + b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 5\r\n\r\nnum=1GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    cut = data.index(b"num=1") + 3
    stream = HttpRequestStream()
    assert stream.feed(data[:cut]) == []
    pending = stream.head_pending()
    assert pending is not None
    assert (pending.seq, pending.complete, pending.body) == (0, False, b"")
    first, second = stream.feed(data[cut:])
    assert first.body == b"num=1"
    assert UPGRADE_WITH_BODY in codes(first)
    assert (second.seq, second.target) == (1, "/x")


def test_empty_feed_is_harmless() -> None:
    stream = HttpRequestStream()
    assert stream.feed(b"") == []
    assert stream.finish() == []


def test_idle_only_between_requests() -> None:
    stream = HttpRequestStream()
    assert stream.idle
    assert len(stream.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGE")) == 1
    assert not stream.idle  # the next request has begun
    assert len(stream.feed(b"T /b HTTP/1.1\r\nHost: x\r\n\r\n")) == 1
    assert stream.idle


def test_http09_request_line_is_offered_for_inspection_at_once() -> None:
    # llhttp waits for a blank line; a server that takes HTTP/0.9 acts on the line alone.
    stream = HttpRequestStream()
    assert stream.feed(b"GET /api/totals/last/1%20or%201=1\r") == []
    assert stream.head_pending() is None  # the line has not ended
    assert stream.feed(b"\n") == []
    view = stream.head_pending()
    assert view is not None and view.target == "/api/totals/last/1%20or%201=1"
    assert view.version == "0.9" and not view.complete
    assert view.anomalies == ("unexpected_version: HTTP/0.9",)
    # Headers after it: no longer the shape of HTTP/0.9; the whole request comes complete.
    assert stream.feed(b"Cookie: a=b\r\n") == []
    assert stream.head_pending() is None
    [whole] = stream.feed(b"\r\n")
    assert whole.header("cookie") == "a=b"
    # A versioned request line never looks like one.
    versioned = HttpRequestStream()
    versioned.feed(b"GET / HTTP/1.1\r\n")
    assert versioned.head_pending() is None

"""Chunking must not matter: whole, byte by byte and random splits give identical requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.http import HttpRequest, HttpRequestStream

GET_H = b"GET / HTTP/1.1\r\nHost: x\r\n"
POST_H = b"POST / HTTP/1.1\r\nHost: x\r\n"


CORPUS: dict[str, bytes] = {
    "simple": b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: num=1\r\n\r\n",
    "pipelined": (
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nnum=1'-"
        b"GET /3?num=2 HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "chunked": (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;e=1\r\nnum=\r\n3\r\n1 o\r\n0\r\nX-T: 1\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "truncated-body": b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nnum=1",
    "truncated-head": b"GET /api/totals/last/1 HTTP/1.1\r\nHost: x\r\nUser-Ag",
    "cl-te": POST_H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup-cl": POST_H + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "bad-header-name": GET_H + b"Accept: */*\r\nH\xffst: y\r\n\r\n",
    "bad-header-value": GET_H + b"A: b\x01c\r\n\r\n",
    "obs-fold": GET_H + b"X: a\r\n b\r\n\r\n",
    "bad-url-char": b"GET /api/totals/last/1\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-url-tab": b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n",
    "bare-lf": b"GET /a HTTP/1.1\nHost: x\n\n",
    "bad-method": b"GXT / HTTP/1.1\r\n\r\n",
    "garbage-after": GET_H + b"\r\nzzz zzz\r\n",
    "tls": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "upgrade-ws": GET_H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x83abc",
    "upgrade-refused": (
        GET_H + b"Connection: Upgrade\r\nUpgrade: foo\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "upgrade-body": (
        POST_H + b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\n"
        b"abcGET /x HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01",
    "dup-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "big-head": b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 12 + b"\r\n",
    "big-body": POST_H + b"Content-Length: 100\r\n\r\n" + b"b" * 100,
}
LIMITS = {"max_body": 64, "max_head": 256, "max_headers": 10}


def run(data: bytes, cuts: list[int]) -> tuple[list[HttpRequest], list[HttpRequest]]:
    """All requests reported, and the heads head_pending offered on the way."""
    stream = HttpRequestStream(**LIMITS)
    out: list[HttpRequest] = []
    early: list[HttpRequest] = []
    start = 0
    for cut in [*cuts, len(data)]:
        out.extend(stream.feed(data[start:cut]))
        pending = stream.head_pending()
        if pending is not None:
            if early and early[-1].seq == pending.seq:
                assert early[-1] == pending, "a head does not change while its body arrives"
            else:
                early.append(pending)
        start = cut
    out.extend(stream.finish())
    return out, early


def check_pending(requests: list[HttpRequest], early: list[HttpRequest]) -> None:
    seqs = [r.seq for r in requests]
    assert seqs == sorted(set(seqs)), "seq is 0, 1, 2... without repeats"
    by_seq = {r.seq: r for r in requests}
    for head in early:
        final = by_seq[head.seq]  # a head offered early is reported later
        assert not head.complete and head.body == b""
        assert (head.method, head.target, head.headers, head.host) == (
            final.method,
            final.target,
            final.headers,
            final.host,
        )


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_byte_by_byte_equals_whole(name: str) -> None:
    data = CORPUS[name]
    whole, _ = run(data, [])
    bytewise, early = run(data, list(range(1, len(data))))
    assert bytewise == whole
    assert whole, "every corpus stream reports something"
    check_pending(bytewise, early)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(CORPUS)),
    cuts=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=12),
)
def test_random_splits_equal_whole(name: str, cuts: list[float]) -> None:
    data = CORPUS[name]
    points = sorted({int(c * len(data)) for c in cuts})
    split, early = run(data, points)
    whole, _ = run(data, [])
    assert split == whole
    check_pending(split, early)


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~%", min_size=1, max_size=12)


@st.composite
def request_bytes(draw: st.DrawFn) -> tuple[bytes, tuple[str, str, bytes]]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = "/" + "/".join(draw(st.lists(_TOKEN, max_size=4)))
    query = draw(st.one_of(st.just(""), _TOKEN.map(lambda q: "?num=" + q)))
    body = draw(st.binary(max_size=40))
    chunked = draw(st.booleans())
    head = f"{method} {path}{query} HTTP/1.1\r\nHost: h\r\n"
    if chunked:
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed
    else:
        raw = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return raw, (method, path + query, body)


@settings(max_examples=200, deadline=None)
@given(
    requests=st.lists(request_bytes(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_generated_pipelines_parse_exactly_under_any_split(
    requests: list[tuple[bytes, tuple[str, str, bytes]]], cuts: list[int]
) -> None:
    data = b"".join(raw for raw, _ in requests)
    points = sorted({c % (len(data) + 1) for c in cuts})
    got, early = run(data, points)
    expected = [
        (i, method, target, body[: LIMITS["max_body"]], len(body) > LIMITS["max_body"])
        for i, (_, (method, target, body)) in enumerate(requests)
    ]
    assert [(r.seq, r.method, r.target, r.body, r.body_truncated) for r in got] == expected
    assert all(r.complete and not r.anomalies for r in got)
    check_pending(got, early)

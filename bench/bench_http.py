"""Per-request cost of the HTTP layer: parse + normalize + params.

Prints us/request and requests/s for a mix of typical requests (browser GET
with headers and cookies, API GET on a route template, form POST, JSON POST,
an evasive request), each stage separately and together:
- parse: HttpRequestStream.feed on the whole request (one stream per flow);
- parse-split: the same request fed in 3 segments;
- parse-ka: per request in a keep-alive stream of 10 pipelined requests
  (no per-flow setup);
- normalize: normalize_path of the target;
- params: extract_params (route matcher with the campaign's two templates,
  and with 3,000 templates);
- all: parse + normalize + params, as the inspector runs them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.core.http import HttpRequest, HttpRequestStream
from agent.core.normalize import normalize_path
from agent.core.params import extract_params
from agent.core.routes import RouteMatcher

BROWSER_GET = (
    b"GET /static/js/app.3f9a1c.js?v=12 HTTP/1.1\r\n"
    b"Host: metrics.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://metrics.example.com/dashboard\r\n"
    b"Cookie: session=8f2c1e0b9a7d; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n"
    b"Connection: keep-alive\r\n\r\n"
)
API_GET = (
    b"GET /api/totals/last/30 HTTP/1.1\r\nHost: metrics.example.com\r\n"
    b"User-Agent: curl/8.5.0\r\nAccept: application/json\r\n\r\n"
)
FORM_BODY = b"user=alice&password=hunter2%21&remember=on&x="
FORM_POST = (
    b"POST /login HTTP/1.1\r\nHost: metrics.example.com\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
    b"Cookie: session=8f2c1e0b9a7d\r\n\r\n%s" % (len(FORM_BODY), FORM_BODY)
)
JSON_BODY = b'{"metric": "cpu", "range": {"num": 30, "unit": "d"}, "tags": []}'
JSON_POST = (
    b"POST /api/query HTTP/1.1\r\nHost: metrics.example.com\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON_BODY), JSON_BODY)
)
EVASIVE = (
    b"GET /API/totals/./last/..;/last/1%2520or%25201=1?num=1%27%20or%20%271 HTTP/1.1\r\n"
    b"Host: metrics.example.com\r\n\r\n"
)
MIX = {
    "browser-get": BROWSER_GET,
    "api-get": API_GET,
    "form-post": FORM_POST,
    "json-post": JSON_POST,
    "evasive": EVASIVE,
}
ROUTES = RouteMatcher(["/api/totals/last/{num}", "/api/diffs/last/{num}"])
MANY_ROUTES = RouteMatcher(
    [f"/svc{i}/v1/items/{{id}}" for i in range(3000)]
    + ["/api/totals/last/{num}", "/api/diffs/last/{num}"]
)


def parse_one(data: bytes) -> HttpRequest:
    stream = HttpRequestStream()
    return stream.feed(data)[0]


def parse_keepalive(data: bytes) -> list[HttpRequest]:
    return HttpRequestStream().feed(data)


def parse_split(data: bytes) -> HttpRequest:
    stream = HttpRequestStream()
    third = len(data) // 3
    out = stream.feed(data[:third])
    out += stream.feed(data[third : 2 * third])
    out += stream.feed(data[2 * third :])
    return out[0]


def everything(data: bytes) -> None:
    """What the inspector runs per request."""
    request = parse_one(data)
    extract_params(request, ROUTES, path=normalize_path(request.target))


def timed(fn: Callable[[], object], seconds: float) -> float:
    """Best-of-3 microseconds of CPU time per call (the host may be busy)."""
    best = float("inf")
    for _ in range(3):
        count = 0
        start = time.process_time()
        deadline = start + seconds / 3
        while True:
            for _ in range(200):
                fn()
            count += 200
            now = time.process_time()
            if now >= deadline:
                break
        best = min(best, (now - start) / count * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="time per measurement")
    args = parser.parse_args()
    for data in MIX.values():
        request = parse_one(data)
        assert request.complete and not request.parse_failed
        assert parse_split(data) == request
        assert len(parse_keepalive(data * 10)) == 10

    print(f"{'request':<12} {'parse':>8} {'split':>8} {'ka':>8} {'norm':>8} {'params':>8} "
          f"{'params3k':>9} {'all':>8} {'req/s':>9}")  # fmt: skip
    totals: list[float] = []
    for name, data in MIX.items():
        request = parse_one(data)
        path = normalize_path(request.target)
        parse_us = timed(partial(parse_one, data), args.seconds)
        split_us = timed(partial(parse_split, data), args.seconds)
        keepalive_us = timed(partial(parse_keepalive, data * 10), args.seconds) / 10
        norm_us = timed(partial(normalize_path, request.target), args.seconds)
        params_us = timed(partial(extract_params, request, ROUTES, path=path), args.seconds)
        many_us = timed(partial(extract_params, request, MANY_ROUTES, path=path), args.seconds)
        all_us = timed(partial(everything, data), args.seconds)
        totals.append(all_us)
        print(f"{name:<12} {parse_us:8.2f} {split_us:8.2f} {keepalive_us:8.2f} {norm_us:8.2f} "
              f"{params_us:8.2f} "
              f"{many_us:9.2f} {all_us:8.2f} {1e6 / all_us:9.0f}")  # fmt: skip
    mean = sum(totals) / len(totals)
    print(
        f"mix mean all: {mean:.2f} us/request = {1e6 / mean:,.0f} requests/s (one core, CPU time)"
    )


if __name__ == "__main__":
    main()

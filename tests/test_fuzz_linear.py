"""Time per input byte stays flat on attacker-shaped input (issue 8: no quadratic paths).

Each family repeats one regex-meaningful unit ("[", '"\\', "on", "a=", ...) in one
place of an HTTP request (path, query value and name, form, JSON, multipart
name, cookie, Content-Type parameters, Host, other headers) and times
`DecisionCore.decide` on a small and a 16x larger request. A linear path keeps
the per-byte time about equal; a quadratic one multiplies it by about 16. The
bound (8x, best of three attempts) leaves room for a loaded CI machine. `bench/bench_floods.py --linear`
prints the same scan with absolute figures (worst microseconds per byte).

The two regressions found this way (params.py: `_leaf_name` on "[" without "]",
the Content-Type/Content-Disposition parameter regex on a long "="-less token)
also have direct tests at sizes where the quadratic version took seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import pytest

from agent.core.decision import PacketMeta
from agent.core.engine import DecisionCore
from agent.core.http import HttpRequest
from agent.core.params import extract_params
from agent.core.routes import RouteMatcher
from tests.helpers import default_core
from tests.test_core import CLIENT, SERVER

META = PacketMeta(timestamp=1_700_000_000.0)
SMALL, LARGE = 500, 8000
MAX_GROWTH = 8.0
ROUTES = RouteMatcher(["/api/totals/last/{num}", "/api/diffs/last/{num}"])

# Units chosen for the regexes in normalize/params/classify/sqli/xss: quotes,
# escapes, brackets, tag and handler starts, keywords, separators.
UNITS: tuple[str, ...] = (
    "[", "a[", "]", '"', "'", "\\", '"\\', "\\x", "\\u0", "%", "%u", "%25", "%2f",
    "<", "<a ", "<a on", "<!--", "on", "onx ", "=", "a=", "a =", ";a=", "a;", "&", "&#",
    "{{", "(", "a(", "--", "/*", "*/", "/", "//", "/.", "a.", "1.", "0x", "@", "`", "'+",
    '"a":', '"a":"', "data :", "url(", "expression", "javascript", "select ", "unix", "a-",
    "*", "x\"-a", "1 ", " ", "\x00",
)  # fmt: skip


def _head(extra: bytes, target: bytes = b"/a") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def _post(content_type: bytes, body: bytes) -> bytes:
    return (
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


FORM = b"application/x-www-form-urlencoded"
# Where the repeated unit goes; True when the place takes raw (unencoded) bytes only
# if they are legal in a request head (no blanks or NUL).
PLACES: dict[str, tuple[bool, Callable[[bytes], bytes]]] = {
    "path": (True, lambda p: _head(b"", b"/api/totals/last/" + p)),
    "query": (True, lambda p: _head(b"", b"/a?num=" + p)),
    "query_name": (True, lambda p: _head(b"", b"/a?" + p + b"=1")),
    "target": (True, lambda p: _head(b"", p)),
    "cookie": (True, lambda p: _head(b"Cookie: num=" + p + b"\r\n")),
    "host": (True, lambda p: b"GET /a HTTP/1.1\r\nHost: " + p + b"\r\n\r\n"),
    "header": (True, lambda p: _head(b"X-Num: " + p + b"\r\n")),
    "content_type": (True, lambda p: _post(b"multipart/form-data; " + p, b"x")),
    "form": (False, lambda p: _post(FORM, b"num=" + p)),
    "form_name": (False, lambda p: _post(FORM, p + b"=1")),
    "json": (False, lambda p: _post(b"application/json", b'{"num":' + p + b"}")),
    "json_raw": (False, lambda p: _post(b"application/json", p)),
    "json_key": (False, lambda p: _post(b"application/json", b'{"' + p + b'":1}')),
    "multipart_name": (False, lambda p: _post(
        b"multipart/form-data; boundary=B",
        b"--B\r\nContent-Disposition: form-data; name=num" + p + b"\r\n\r\nx\r\n--B--\r\n",
    )),
}  # fmt: skip


class Timer:
    """Sends one request per fresh flow (SYN, then the whole request in one segment)."""

    def __init__(self, core: DecisionCore) -> None:
        self.core = core
        self.port = 1024

    def seconds(self, request: bytes) -> float:
        from scapy.layers.inet import IP, TCP
        from scapy.packet import Raw

        self.port = self.port + 1 if self.port < 65000 else 1025
        ip = IP(src=CLIENT, dst=SERVER)
        self.core.decide(bytes(ip / TCP(sport=self.port, dport=80, flags="S", seq=100)), META)
        packet = bytes(ip / TCP(sport=self.port, dport=80, flags="PA", seq=101, ack=1) / Raw(request))
        start = time.perf_counter()
        self.core.decide(packet, META)
        return time.perf_counter() - start


def payload(unit: bytes, size: int) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


def families() -> list[tuple[str, str, bytes]]:
    """(place, label, unit) for every place and unit, raw and percent-encoded."""
    out: list[tuple[str, str, bytes]] = []
    for place, (head_only, _) in PLACES.items():
        for unit in UNITS:
            encoded = quote(unit, safe="").encode()
            if not (head_only and any(c in unit for c in " \t\x00")):
                out.append((place, f"raw {unit!r}", unit.encode()))
            if encoded != unit.encode():
                out.append((place, f"pct {unit!r}", encoded))
    return out


def growth(timer: Timer, place: str, unit: bytes, small: int, large: int) -> tuple[float, float]:
    """(per-byte time ratio large/small, worst microseconds per byte at `large`)."""
    build = PLACES[place][1]
    per_small = min(timer.seconds(build(payload(unit, small))) for _ in range(3)) / small
    per_large = min(timer.seconds(build(payload(unit, large))) for _ in range(3)) / large
    return per_large / max(per_small, 1e-9), per_large * 1e6


def test_time_per_byte_is_flat_for_every_family() -> None:
    timer = Timer(default_core())
    slow: list[str] = []
    for place, label, unit in families():
        # Up to three attempts: a busy machine can stall a measurement, not all three.
        ratios = []
        for _ in range(3):
            ratios.append(growth(timer, place, unit, SMALL, LARGE)[0])
            if ratios[-1] <= MAX_GROWTH:
                break
        else:
            slow.append(f"{place} {label}: x{min(ratios):.1f} per byte for x{LARGE // SMALL} size")
    assert not slow, slow


def _request(target: str, headers: tuple[tuple[str, str], ...], body: bytes) -> HttpRequest:
    return HttpRequest(
        seq=0, method="POST", target=target, version="1.1", headers=headers, host="x",
        body=body, body_truncated=False, complete=True,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["[" * 65536, "a[" * 32768, "num]" + "[" * 65536])
def test_bracket_names_without_closing_bracket_are_linear(name: str) -> None:
    # Regression: the leaf-name regex rescanned to the end from every "[" (~20 s here).
    start = time.perf_counter()
    params = extract_params(_request(f"/a?{name}=1", (), b""), ROUTES)
    assert time.perf_counter() - start < 1.0
    assert len(params.params) == 1


@pytest.mark.parametrize("token", ["a" * 65536, "a-" * 32768, "*" * 65536])
def test_long_content_type_token_without_equals_is_linear(token: str) -> None:
    # Regression: the parameter regex tried every position inside the token (~10 s here).
    for media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        headers = (("content-type", f"{media}; {token}"),)
        start = time.perf_counter()
        extract_params(_request("/a", headers, b"num=1"), ROUTES)
        assert time.perf_counter() - start < 1.0


def test_disposition_parameters_still_found_after_long_tokens() -> None:
    # The linear regex must keep finding parameters that follow junk tokens.
    body = b"--B\r\nContent-Disposition: form-data; " + b"x" * 5000 + b"; name=num\r\n\r\n7 or 1=1\r\n--B--\r\n"
    headers = (("content-type", "multipart/form-data; " + "j" * 5000 + "; boundary=B"),)
    params = extract_params(_request("/a", headers, body), ROUTES)
    assert [(p.name, p.value) for p in params.params] == [("num", "7 or 1=1")]


def test_leaf_name_keeps_bracket_semantics() -> None:
    query = "a[b][num]=1&c[num][]=2&d[0]=3&e[x]junk[=4&f[[g]=5"
    params = extract_params(_request(f"/a?{query}", (), b""), ROUTES)
    assert [p.name for p in params.params] == ["num", "num", "d", "x", "[g"]

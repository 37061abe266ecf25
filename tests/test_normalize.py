"""decode_component and normalize_path: evasions undone and reported."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.normalize import (
    BACKSLASH,
    DECODE_ROUNDS_EXCEEDED,
    DOT_SEGMENT,
    DOUBLE_ENCODING,
    ENCODED_SLASH,
    INVALID_PERCENT_ESCAPE,
    INVALID_UTF8,
    NUL_BYTE,
    OVERLONG_UTF8,
    PATH_ABOVE_ROOT,
    PERCENT_U_ESCAPE,
    decode_component,
    normalize_path,
)


@pytest.mark.parametrize(
    ("raw", "plus", "value", "double", "anomalies"),
    [
        ("plain", False, "plain", False, ()),
        ("a+b", True, "a b", False, ()),
        ("a+b", False, "a+b", False, ()),
        ("%2B", True, "+", False, ()),
        ("1%20or%201=1", False, "1 or 1=1", False, ()),
        ("%27", False, "'", False, ()),
        ("%2527", False, "'", True, ()),
        ("%252527", False, "'", True, ()),
        ("%25252527", False, "%27", True, (DECODE_ROUNDS_EXCEEDED,)),
        ("%25", False, "%", False, ()),
        ("100%", False, "100%", False, (INVALID_PERCENT_ESCAPE,)),
        ("%zz", False, "%zz", False, (INVALID_PERCENT_ESCAPE,)),
        ("%u0027", False, "'", False, (PERCENT_U_ESCAPE,)),
        ("%U003c", False, "<", False, (PERCENT_U_ESCAPE,)),
        ("%uFF1C", False, "\uff1c", False, (PERCENT_U_ESCAPE,)),
        ("%c0%af", False, "/", False, (OVERLONG_UTF8,)),
        ("%C0%AE%C0%AE", False, "..", False, (OVERLONG_UTF8,)),
        ("%e0%80%af", False, "/", False, (OVERLONG_UTF8,)),
        ("%f0%80%80%af", False, "/", False, (OVERLONG_UTF8,)),
        ("%c3%a9", False, "\u00e9", False, ()),
        ("%ff", False, "\ufffd", False, (INVALID_UTF8,)),
        ("%c3", False, "\ufffd", False, (INVALID_UTF8,)),
        ("%ed%a0%80", False, "\ufffd", False, (INVALID_UTF8,)),  # a surrogate
        ("a%00b", False, "ab", False, (NUL_BYTE,)),
        ("a\x00b", False, "ab", False, (NUL_BYTE,)),
        ("%2500", False, "", True, (NUL_BYTE,)),
        ("%3Cscript%3E", True, "<script>", False, ()),
        ("caf\udcc3\udca9", False, "caf\u00e9", False, ()),  # raw UTF-8 bytes from a body
        ("\ud800x", False, "\ufffdx", False, (INVALID_UTF8,)),  # a lone surrogate
    ],
)
def test_decode_component_table(
    raw: str, plus: bool, value: str, double: bool, anomalies: tuple[str, ...]
) -> None:
    decoded = decode_component(raw, plus_as_space=plus)
    assert decoded.value == value
    assert decoded.double_encoded is double
    assert decoded.anomalies == anomalies


@given(st.text(max_size=40))
def test_decode_component_never_raises_and_strips_nul(raw: str) -> None:
    decoded = decode_component(raw, plus_as_space=True)
    assert "\x00" not in decoded.value


@given(
    st.text(
        alphabet=st.characters(exclude_characters="%+\x00", exclude_categories=["Cs"]),
        max_size=40,
    )
)
def test_decode_component_is_identity_without_escapes(raw: str) -> None:
    decoded = decode_component(raw, plus_as_space=True)
    assert decoded.value == raw
    assert not decoded.double_encoded


@pytest.mark.parametrize(
    ("raw", "path", "anomalies"),
    [
        ("/", "/", ()),
        ("/a/b", "/a/b", ()),
        ("/a/b?x=1/../..", "/a/b", ()),
        ("/a/b#frag/../x", "/a/b", ()),
        ("/a//b///c", "/a/b/c", ()),
        ("/a/b/", "/a/b/", ()),
        ("/a/./b", "/a/b", (DOT_SEGMENT,)),
        ("/a/b/../c", "/a/c", (DOT_SEGMENT,)),
        ("/a/b/..", "/a/", (DOT_SEGMENT,)),
        ("/a/.", "/a/", (DOT_SEGMENT,)),
        ("/../../etc/passwd", "/etc/passwd", (DOT_SEGMENT, PATH_ABOVE_ROOT)),
        ("/a/..%2f..%2fetc", "/etc", (ENCODED_SLASH, DOT_SEGMENT, PATH_ABOVE_ROOT)),
        ("/%2e%2e/x", "/x", (DOT_SEGMENT, PATH_ABOVE_ROOT)),
        ("/a/%2E%2e/b", "/b", (DOT_SEGMENT,)),
        ("/a/%252e%252e/b", "/b", (DOUBLE_ENCODING, DOT_SEGMENT)),
        ("/a/%c0%ae%c0%ae/b", "/b", (OVERLONG_UTF8, DOT_SEGMENT)),
        ("/a\\b\\..\\c", "/a/c", (BACKSLASH, DOT_SEGMENT)),
        ("/a%5cb", "/a/b", (ENCODED_SLASH, BACKSLASH)),
        ("/A/B", "/A/B", ()),
        ("/metrics-ui/server/srv.go", "/metrics-ui/server/srv.go", ()),
        ("/metrics-ui%2fserver%2fsrv.go", "/metrics-ui/server/srv.go", (ENCODED_SLASH,)),
        ("/a+b", "/a+b", ()),
        ("/a%20b", "/a b", ()),
        ("/a%00.go", "/a.go", (NUL_BYTE,)),
        ("/x/%u002e%u002e/y", "/y", (PERCENT_U_ESCAPE, DOT_SEGMENT)),
        ("http://host.example/a/./b?q", "/a/b", (DOT_SEGMENT,)),
        ("HTTPS://host.example", "/", ()),
        ("*", "*", ()),
        ("host.example:443", "", ()),
    ],
)
def test_normalize_path_table(raw: str, path: str, anomalies: tuple[str, ...]) -> None:
    normalized = normalize_path(raw)
    assert normalized.path == path
    assert normalized.raw == raw
    assert normalized.anomalies == anomalies


def test_path_params_removed_and_kept_apart() -> None:
    normalized = normalize_path("/shop;jsessionid=AB12/cart;v=1/item")
    assert normalized.path == "/shop/cart/item"
    assert normalized.path_params == ("jsessionid=AB12", "v=1")
    assert normalized.alt_path == "/shop;jsessionid=AB12/cart;v=1/item"


def test_dot_dot_semicolon_climbs_like_tomcat() -> None:
    normalized = normalize_path("/API/totals/last/..;/last/1")
    assert normalized.path == "/API/totals/last/1"
    assert normalized.path_lower == "/api/totals/last/1"
    assert normalized.alt_path == "/API/totals/last/..;/last/1"
    assert DOT_SEGMENT in normalized.anomalies


def test_encoded_semicolon_is_a_path_param_too() -> None:
    normalized = normalize_path("/api/diffs/last/1%3Bunion%20select")
    assert normalized.path == "/api/diffs/last/1"
    assert normalized.alt_path == "/api/diffs/last/1;union select"


def test_double_encoded_path_is_flagged() -> None:
    normalized = normalize_path("/a%252fb")
    assert normalized.path == "/a/b"
    assert normalized.double_encoded


def test_lowercasing_is_a_separate_step() -> None:
    normalized = normalize_path("/Metrics-UI/Server/SRV.go")
    assert normalized.path == "/Metrics-UI/Server/SRV.go"
    assert normalized.path_lower == "/metrics-ui/server/srv.go"


@given(st.text(alphabet="/.%2eEfF5cC\\;ab", max_size=30))
def test_normalized_path_is_rooted_and_has_no_dot_or_empty_segments(raw: str) -> None:
    path = normalize_path("/" + raw).path
    assert path.startswith("/")
    inner = path.strip("/")
    segments = inner.split("/") if inner else []
    assert all(s not in ("", ".", "..") for s in segments)
    assert "\\" not in path
    assert normalize_path(path).path == path, "normalizing twice changes nothing"

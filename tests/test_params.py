"""extract_params and RouteMatcher: parameters from every location a backend reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.decision import Where
from agent.core.http import HttpRequest, HttpRequestStream
from agent.core.normalize import normalize_path
from agent.core.params import (
    JSON_MALFORMED,
    MULTIPART_MALFORMED,
    TOO_MANY_PARAMS,
    UNUSUAL_CHARSET,
    ParamSet,
    base_name,
    extract_params,
)
from agent.core.routes import RouteMatcher

ROUTES = RouteMatcher(["/api/totals/last/{num}", "/api/diffs/last/{num}"])
NO_ROUTES = RouteMatcher([])


def request(head: str, body: bytes = b"", **headers: str) -> HttpRequest:
    lines = [f"{head} HTTP/1.1", "Host: h"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    stream = HttpRequestStream()
    [parsed] = stream.feed(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    assert parsed.complete and not parsed.parse_failed
    return parsed


def values(params: ParamSet, name: str) -> list[tuple[str, Where]]:
    return [(p.value, p.where) for p in params.by_name(name)]


# --- routes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/api/totals/last/5", [("num", "5")]),
        ("/api/diffs/last/5/", [("num", "5")]),
        ("/API/Totals/LAST/5", [("num", "5")]),
        ("/api/totals/last/1%20or%201=1", [("num", "1 or 1=1")]),
        ("/api/totals/./last/1%20or%201=1", [("num", "1 or 1=1")]),
        ("/API/totals/last/..;/last/1", [("num", "1")]),
        ("/api//totals/last/%31%27", [("num", "1'")]),
        ("/api/x/../totals/last/7", [("num", "7")]),
        ("/api/totals%2flast%2f8", [("num", "8")]),
        ("/api/totals/last", []),
        # The last {num} takes the rest of a longer path: slashes cannot hide a value.
        ("/api/totals/last/1/2", [("num", "1/2")]),
        ("/api/other/last/1", []),
        ("/", []),
    ],
)
def test_route_templates_with_evasions(target: str, expected: list[tuple[str, str]]) -> None:
    assert list(ROUTES.match(normalize_path(target).path)) == expected


def test_route_matcher_many_templates_and_param_first() -> None:
    templates = [f"/svc{i}/items/{{id}}" for i in range(3000)] + ["/{tenant}/api/{num}"]
    matcher = RouteMatcher(templates)
    assert matcher.match("/svc2999/items/42") == (("id", "42"),)
    assert matcher.match("/acme/API/9") == (("tenant", "acme"), ("num", "9"))
    assert matcher.match("/svc1/items") == ()
    assert len(matcher) == 3001


def test_route_matcher_every_matching_template_once() -> None:
    matcher = RouteMatcher(["/a/{x}", "/{y}/b", "/a/{x}", "/a/{z}"])
    assert matcher.match("/a/b") == (("x", "b"), ("y", "a"), ("z", "b"))


def test_empty_route_matcher() -> None:
    assert NO_ROUTES.match("/api/totals/last/1") == ()
    assert len(NO_ROUTES) == 0


# --- locations --------------------------------------------------------------------


def test_path_parameter_from_route() -> None:
    params = extract_params(request("GET /api/totals/last/1%20or%201=1"), ROUTES)
    assert values(params, "num") == [("1 or 1=1", Where.PATH)]


def test_path_parameter_with_semicolon_both_readings() -> None:
    params = extract_params(request("GET /api/diffs/last/1;union%20select%201"), ROUTES)
    assert values(params, "num") == [("1", Where.PATH), ("1;union select 1", Where.PATH)]


def test_matrix_path_params() -> None:
    params = extract_params(request("GET /shop;jsessionid=ABC/cart"), NO_ROUTES)
    assert values(params, "jsessionid") == [("ABC", Where.PATH)]


def test_query_repeated_separators_and_bare_names() -> None:
    params = extract_params(request("GET /x?num=1&num=2;num=3&flag&=v&&Q%55ERY=a+b"), NO_ROUTES)
    assert values(params, "num") == [("1", Where.QUERY), ("2", Where.QUERY), ("3", Where.QUERY)]
    assert values(params, "flag") == [("", Where.QUERY)]
    assert values(params, "query") == [("a b", Where.QUERY)]
    assert values(params, "") == [("v", Where.QUERY)]


def test_query_raw_value_kept_and_double_encoding_flagged() -> None:
    params = extract_params(request("GET /x?num=1%2527"), NO_ROUTES)
    [param] = params.by_name("num")
    assert (param.value, param.raw, param.double_encoded) == ("1'", "1%2527", True)
    assert params.double_encoded
    assert any(a.startswith("double_encoding") for a in params.anomalies)


def test_php_style_names() -> None:
    params = extract_params(
        request("GET /x?num[]=1&num%5B0%5D=2&a[num]=3&a[b][num]=4&list[]=5"), NO_ROUTES
    )
    assert [p.value for p in params.by_name("num")] == ["1", "2", "3", "4"]
    assert [p.value for p in params.by_name("num[]")] == ["1"]
    assert [p.value for p in params.by_name("a")] == ["3", "4"]
    assert [p.full_name for p in params.by_name("list")] == ["list[]"]


def test_urlencoded_body() -> None:
    body = b"num=1+or+1%3D1&x=%3Cscript%3E"
    params = extract_params(
        request("POST /f", body, Content_Type="application/x-www-form-urlencoded; charset=UTF-8"),
        NO_ROUTES,
    )
    assert values(params, "num") == [("1 or 1=1", Where.BODY)]
    assert values(params, "x") == [("<script>", Where.BODY)]


def test_body_without_content_type_is_sniffed() -> None:
    params = extract_params(request("POST /f", b"num=2'--"), NO_ROUTES)
    assert values(params, "num") == [("2'--", Where.BODY)]
    params = extract_params(request("POST /f", b'{"num": "3"}'), NO_ROUTES)
    assert values(params, "num") == [("3", Where.BODY)]


def test_binary_body_of_other_type_is_ignored() -> None:
    params = extract_params(
        request("POST /f", b"\x00num=1", Content_Type="application/octet-stream"), NO_ROUTES
    )
    assert params.by_name("num") == ()


def test_json_body_flattened() -> None:
    body = b'{"a": {"num": "1 or 1=1"}, "ids": [1, 2.50, {"num": 7}], "ok": true, "n": null}'
    params = extract_params(request("POST /j", body, Content_Type="application/json"), NO_ROUTES)
    assert values(params, "num") == [("1 or 1=1", Where.BODY), ("7", Where.BODY)]
    assert [p.full_name for p in params.by_name("num")] == ["a.num", "ids[2].num"]
    assert [p.value for p in params.by_name("ids")] == ["1", "2.50", "7"]
    assert [p.value for p in params.by_name("a.num")] == ["1 or 1=1"]
    assert values(params, "ok") == [("true", Where.BODY)]
    assert values(params, "n") == [("null", Where.BODY)]


def test_malformed_json_is_scanned() -> None:
    body = b'{"a": {"num": "1\\u0027 or 1=1", "k": 5,'
    params = extract_params(
        request("POST /j", body, Content_Type="application/vnd.api+json"), NO_ROUTES
    )
    assert values(params, "num") == [("1' or 1=1", Where.BODY)]
    assert values(params, "k") == [("5", Where.BODY)]
    assert any(a.startswith(JSON_MALFORMED) for a in params.anomalies)


def test_deeply_nested_json_does_not_raise() -> None:
    body = b'{"a":' * 3000 + b'"x"' + b"}" * 3000
    params = extract_params(request("POST /j", body, Content_Type="application/json"), NO_ROUTES)
    assert JSON_MALFORMED in params.anomalies[0]


MULTIPART = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="num"\r\n\r\n'
    b"1 or 1=1\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="up"; filename="a.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\n"
    b"num=not-a-param\r\n"
    b"--XyZ\r\n"
    b"content-disposition: form-data; name=Other\r\n\r\n"
    b"line1\r\nline2\r\n"
    b"--XyZ--\r\n"
)


def test_multipart_text_parts_only() -> None:
    params = extract_params(
        request("POST /m", MULTIPART, Content_Type='multipart/form-data; boundary="XyZ"'),
        NO_ROUTES,
    )
    assert values(params, "num") == [("1 or 1=1", Where.BODY)]
    assert values(params, "other") == [("line1\r\nline2", Where.BODY)]
    assert params.by_name("up") == ()
    assert params.anomalies == ()


def test_multipart_malformed_reported() -> None:
    params = extract_params(
        request("POST /m", MULTIPART[:60], Content_Type="multipart/form-data; boundary=XyZ"),
        NO_ROUTES,
    )
    assert any(a.startswith(MULTIPART_MALFORMED) for a in params.anomalies)
    params = extract_params(
        request("POST /m", MULTIPART, Content_Type="multipart/form-data"), NO_ROUTES
    )
    assert any(a.startswith(MULTIPART_MALFORMED) for a in params.anomalies)


def test_cookies() -> None:
    params = extract_params(
        request("GET /c", Cookie='num=1%20or%201=1; sid="abc"; flag'), NO_ROUTES
    )
    assert values(params, "num") == [("1 or 1=1", Where.COOKIE)]
    assert values(params, "sid") == [("abc", Where.COOKIE)]
    assert values(params, "flag") == [("", Where.COOKIE)]


def test_every_location_in_one_request() -> None:
    req = request(
        "POST /api/totals/last/1?num=2",
        b"num=3",
        Content_Type="application/x-www-form-urlencoded",
        Cookie="num=4",
    )
    params = extract_params(req, ROUTES)
    assert values(params, "num") == [
        ("1", Where.PATH),
        ("2", Where.QUERY),
        ("3", Where.BODY),
        ("4", Where.COOKIE),
    ]
    assert params.by_name("NUM") == params.by_name("num")


def test_max_params_bounds_the_work() -> None:
    query = "&".join(f"p{i}=v" for i in range(500))
    params = extract_params(request(f"GET /x?{query}"), NO_ROUTES, max_params=100)
    assert len(params) == 100
    assert any(a.startswith(TOO_MANY_PARAMS) for a in params.anomalies)


def test_precomputed_path_is_used() -> None:
    req = request("GET /api/totals/last/9")
    params = extract_params(req, ROUTES, path=normalize_path("/api/diffs/last/8"))
    assert values(params, "num") == [("8", Where.PATH)]


@given(
    query=st.text(alphabet="ab=&;%2+[]0.", max_size=40),
    body=st.binary(max_size=80),
    ctype=st.sampled_from(
        [
            "",
            "application/json",
            "multipart/form-data; boundary=b",
            "text/plain",
            "application/x-www-form-urlencoded",
        ]
    ),
)
def test_extract_params_never_raises(query: str, body: bytes, ctype: str) -> None:
    req = HttpRequest(
        seq=0,
        method="POST",
        target="/api/totals/last/x?" + query,
        version="1.1",
        headers=(("content-type", ctype), ("cookie", query)),
        host="h",
        body=body,
        body_truncated=False,
        complete=True,
    )
    params = extract_params(req, ROUTES, max_params=64)
    assert len(params) <= 64
    assert all(p.name == p.name.lower() for p in params)


@given(data=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=300))
def test_any_bytes_through_the_whole_layer_never_raise(data: bytes, cut: int) -> None:
    stream = HttpRequestStream(max_body=128)
    requests = stream.feed(b"POST /api/totals/last/" + data[:cut])
    requests += stream.feed(data[cut:])
    requests += stream.finish()
    for req in requests:
        path = normalize_path(req.target)
        extract_params(req, ROUTES, path=path)


def test_unusual_body_charset_is_reported() -> None:
    ctype = "application/x-www-form-urlencoded; charset=ibm037"
    params = extract_params(request("POST /f", b"\x95\xa4\x94~\xf1", Content_Type=ctype), NO_ROUTES)
    assert any(a.startswith(UNUSUAL_CHARSET) for a in params.anomalies)
    ctype = "application/x-www-form-urlencoded; charset=UTF-8"
    params = extract_params(request("POST /f", b"num=1", Content_Type=ctype), NO_ROUTES)
    assert params.anomalies == ()


# --- evasions found by the decision-path bug hunt --------------------------------------


def test_json_repeated_key_keeps_every_value() -> None:
    # Python keeps the last value; a first-wins backend reads the first one.
    body = b'{"num": "1 or 1=1", "num": 2, "a": {"num": 3, "num": "4\'"}}'
    params = extract_params(request("POST /j", body, Content_Type="application/json"), NO_ROUTES)
    assert [p.value for p in params.by_name("num")] == ["1 or 1=1", "2", "3", "4'"]


def test_multipart_empty_filename_is_a_form_value() -> None:
    # Go's multipart reader treats a part with filename="" as a form value.
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="num"; filename=""\r\n\r\n1 or 1=1\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="up"; filename="a.sql"\r\n\r\nx\r\n--XX--\r\n'
    )
    params = extract_params(
        request("POST /m", body, Content_Type="multipart/form-data; boundary=XX"), NO_ROUTES
    )
    assert values(params, "num") == [("1 or 1=1", Where.BODY)]
    assert params.by_name("up") == ()


def test_multipart_rfc2231_and_repeated_names() -> None:
    # name*=UTF-8''num is "num" to Go's mime package; a repeated name is read first or
    # last depending on the backend: the value is inspected under every name.
    body = (
        b"--XX\r\nContent-Disposition: form-data; name*=UTF-8''n%75m\r\n\r\n1'\r\n"
        b'--XX\r\nContent-Disposition: form-data; name="num"; name="x"\r\n\r\n2\'\r\n--XX--\r\n'
    )
    params = extract_params(
        request("POST /m", body, Content_Type="multipart/form-data; boundary=XX"), NO_ROUTES
    )
    assert [p.value for p in params.by_name("num")] == ["1'", "2'"]
    assert [p.value for p in params.by_name("x")] == ["2'"]


def test_base_name_of_structured_names() -> None:
    assert [base_name(n) for n in ("num[x]", "num[0][y]", "num.x", "num")] == ["num"] * 4


def test_bodies_in_charsets_that_hide_ascii_are_decoded() -> None:
    # ASP.NET decodes a form by its charset (EBCDIC, UTF-16); JSON readers detect UTF-16/32.
    form = "num=1' or 1=1".encode("cp037")
    params = extract_params(
        request(
            "POST /f",
            form,
            Content_Type="application/x-www-form-urlencoded; charset=ibm037",
        ),
        NO_ROUTES,
    )
    assert values(params, "num") == [("1' or 1=1", Where.BODY)]
    assert any(a.startswith(UNUSUAL_CHARSET) for a in params.anomalies)
    for data, ctype in (
        ('{"num": "2\'"}'.encode("utf-16-le"), "application/json"),
        ('{"num": "2\'"}'.encode("utf-16"), "application/json"),
        ('{"num": "2\'"}'.encode("utf-32-be"), "application/json; charset=utf-32be"),
        ('\ufeff{"num": "2\'"}'.encode(), "application/json"),
    ):
        params = extract_params(request("POST /j", data, Content_Type=ctype), NO_ROUTES)
        assert values(params, "num") == [("2'", Where.BODY)], ctype
    # A charset outside the short list is reported, not used to decode.
    params = extract_params(
        request(
            "POST /f", b"num=3", Content_Type="application/x-www-form-urlencoded; charset=punycode"
        ),
        NO_ROUTES,
    )
    assert values(params, "num") == [("3", Where.BODY)]


def test_cookies_split_at_commas_and_blanks_as_well() -> None:
    # RFC 2109 / Python's http.cookies read `num` in both headers; ';' readers see `a`.
    for header in ("a=b, num=1'--", "a=b num=1'--"):
        params = extract_params(request("GET /c", Cookie=header), NO_ROUTES)
        assert values(params, "num") == [("1'--", Where.COOKIE)], header
        assert [p.value for p in params.by_name("a")] == [header[2:]]
    params = extract_params(request("GET /c", Cookie="q=a b c; t=x,y"), NO_ROUTES)
    assert [p.name for p in params] == ["q", "t"]

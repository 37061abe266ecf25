"""Table tests for the value classifiers: one table per evasion class."""

from __future__ import annotations

import dataclasses

import pytest

from agent.core.classify import MAX_CLASSIFIED_CHARS, Finding, classify_value
from agent.intel.model import ArgumentType, EvidenceKind

SQLI, XSS, TYPE = EvidenceKind.SQLI, EvidenceKind.XSS, EvidenceKind.TYPE_VIOLATION


def kinds(value: str, expected: ArgumentType | None = None) -> set[EvidenceKind]:
    return {finding.kind for finding in classify_value(value, expected)}


SQLI_BY_EVASION = {
    "comments": [
        "1/**/union/**/select/**/1,2",
        "/*!50000union*/ /*!50000select*/ 1",
        "1 /*!union*/ /*!select*/ password /*!from*/ users",
        "1 union--\nselect 1",
        "1 union#x\nselect 1",
        "admin'--",
        "admin' #",
        "admin'/*",
        "1' or 1=1-- -",
    ],
    "whitespace": [
        "1\tunion\tselect\t1",
        "1\nunion\nselect\n1",
        "1\x0bunion\x0bselect\x0b1",
        "1\x0cunion\x0cselect\x0c1",
        "1\runion\rselect\r1",
        "1\xa0union\xa0select\xa01",
        "1+union+all+select+null,null--",
        "1+or+1=1",
        "1 union(select(1))",
        "1\uff07 or \uff07a\uff07=\uff07a",  # fullwidth apostrophes
        "1 UnIoN(SeLeCt(password)from(users))",
        "1'or(1)=(1)#",
    ],
    "encodings": [
        "1 and 0x61646d696e=0x61646d696e",
        "char(97,100,109,105,110)",
        "1' and username=CHR(97)||CHR(100)||CHR(109)--",
        "1' and concat('ad','min')='admin'-- ",
        "1' and 'adm'||'in'='admin'--",
        "1 union select 0x3c3f706870,2 into outfile '/var/www/x.php'",
    ],
    "stacked": [
        "1) r; SELECT pg_sleep(5)--",
        "1;drop table x",
        "1'; exec master..xp_cmdshell 'dir'--",
        "1; DECLARE @v varchar(10); SET @v='x'",
        "1; insert into users values ('a','b')",
        "1; update users set role='admin'",
        "1;delete from logs--",
        "1'; shutdown--",
    ],
    "boolean": [
        "1 or 1=1",
        "1' and 'a'='a",
        "1 AND 1=1",
        "' or ''='",
        "-1 or 2>1",
        "1) or (1=1",
        "x' or 'x' like 'x",
        "') or ('x')=('x",
        "1 or true",
        " OR 1=1",
        "1' AND 5423=5423 AND 'abc'='abc",
    ],
    "time-based": [
        "sleep(5)",
        "1 and sleep(5)",
        "1 AND pg_sleep(5)",
        "1;waitfor delay '0:0:5'--",
        "waitfor delay '0:0:5'",
        "1 and benchmark(5000000,md5('a'))",
        "1 AND 1=dbms_pipe.receive_message('a',5)",
        "1 AND 1=randomblob(500000000)",
        "1 OR (SELECT 1 FROM (SELECT SLEEP(5))a)",
    ],
    "error-based": [
        "1 and extractvalue(1,concat(0x7e,version()))",
        "1 AND updatexml(1,concat(0x7e,user()),1)",
        "1 AND 1=convert(int,@@version)",
        "1 AND 1=CAST(version() AS int)",
        "cast((select password from users) as int)",
        "1 AND 1=utl_inaddr.get_host_address((select user from dual))",
    ],
    "union": [
        "union all select null,null--",
        "1 union select 1,2,3",
        "-1 UNION SELECT username,password FROM users--",
        "' UNION SELECT table_name,NULL FROM information_schema.tables--",
        "1 union select name,sql from sqlite_master",
    ],
    "misc": [
        "1 order by 1--",
        "1' ORDER BY 3#",
        "select @@version",
        "1 and @@version like '8%'",
        "1 into outfile '/tmp/x'",
        "load_file('/etc/passwd')",
        "1 and 1=(select count(*) from sqlite_master)",
        "1 and (select 1 from information_schema.tables limit 1)=1",
        "elt(5423=5423,1)",
        "(CASE WHEN 1=1 THEN 1 ELSE 0 END)",
    ],
}


@pytest.mark.parametrize(
    "value",
    [pytest.param(v, id=f"{cls}:{v[:30]!r}") for cls, vs in SQLI_BY_EVASION.items() for v in vs],
)
def test_sqli_evasions_are_detected(value: str) -> None:
    assert SQLI in kinds(value)


XSS_BY_EVASION = {
    "tags": [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<svg/onload=alert(1)>",
        "<iframe src=//evil.example>",
        "<body onload=alert(1)>",
        "<details open ontoggle=alert(1)>",
        "<ScRiPt>alert(1)</sCrIpT>",
        "<scr<script>ipt>alert(1)</scr<script>ipt>",
        "<x onclick=alert(1)>click",
        "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e",  # fullwidth angle brackets
    ],
    "urls": [
        "javascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "java&#x09;script:alert(1)",
        "jav\tascript:alert(1)",
        '<a href="&#106;avascript:alert(1)">x</a>',
        "<a href=javas&Tab;cript:alert(1)>x",
        '<a href="javascript&colon;alert(1)">x',
    ],
    "entities": [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&#60;img src=x onerror=alert(1)&#62;",
        "&#x3c;svg onload=alert(1)&#x3e;",
        "<IMG SRC=&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105&#0000112"
        "&#0000116&#0000058&#0000097&#0000108&#0000101&#0000114&#0000116&#0000040&#0000039&#0000088"
        "&#0000083&#0000083&#0000039&#0000041>",
        "&amp;lt;script&amp;gt;alert(1)",
        "&ltscript&gtalert(1)&lt/script&gt",  # named references without ";"
        "&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A&#x61&#x6C&#x65&#x72&#x74&#x28&#x31&#x29",
    ],
    "js-escapes": [
        "\\x3cscript\\x3ealert(1)\\x3c/script\\x3e",
        "\\u003cimg src=x onerror=alert(1)\\u003e",
        "\\u{3c}svg onload=alert(1)>",
        "\\74script\\76alert(1)",
    ],
    "css": [
        '<div style="width:expression(alert(1))">',
        "x:expr/**/ession(alert(1))",
        '<x style="behavior:url(x.htc)">',
        "<style>@import 'http://evil.example/x.css';</style>",
    ],
    "comments": [
        '<!--<img src="--><img src=x onerror=alert(1)//">',
        "--><script>alert(1)</script>",
    ],
    "breakouts": [
        '"><script>alert(1)</script>',
        "'><img src=x onerror=alert(1)>",
        "'-alert(1)-'",
        '";alert(1)//',
        "\\'-alert(1)//",
        '" autofocus onfocus=alert(1) x="',
        "</title><script>alert(1)</script>",
    ],
    "templates": [
        "{{constructor.constructor('alert(1)')()}}",
        "{{$on.constructor('alert(1)')()}}",
        "${alert(1)}",
    ],
}


@pytest.mark.parametrize(
    "value",
    [pytest.param(v, id=f"{cls}:{v[:30]!r}") for cls, vs in XSS_BY_EVASION.items() for v in vs],
)
def test_xss_evasions_are_detected(value: str) -> None:
    assert XSS in kinds(value)


BENIGN = [
    "O'Brien", "D'Angelo", "Rock 'n' roll", "It's 5 o'clock -- late", "select a size or color",
    "Union Station", "Select all that apply", "(Select all that apply)", "salt or pepper",
    "2 or 3 bedrooms", "1950 or 1960", "Tom and Jerry", "where is the union station?",
    "Order by phone", "Drop table for two near the window", "sleep (8 hours)",
    "john.doe@example.com", "https://example.com/a?b=c&page=2", "http://example.com/",
    "2024-01-01", "01/02/2024", "2024-05-06T07:08:09Z", "123e4567-e89b-42d3-a456-426614174000",
    '{"like": 82, "option": "eye"}', '{"order": 5, "limit": 10}', "aGVsbG8gd29ybGQ=",
    "report_2024.pdf", "$19.99", "€5,00", "50% off", "how to use select in sql",
    "Café crème brûlée", "Grüße aus München", "東京都渋谷区", "안녕하세요", "**bold** and _it_",
    "# Heading", "- item", "[link](https://example.com)", "JavaScript: The Good Parts",
    "regular expression (regex)", "x < y and y > z", "5 < 10", "a = b", "C# and F#", "#42",
    "Q&A", "AT&T", "Ben & Jerry's", "I <3 NY", "{{username}}", "Hello {{name}}!", "${HOME}",
    "turn on notifications", "onboarding", "data: 42", "the \"best\" deal", "50/50", "and/or",
    "necklace length 16\" or 18\"", "1/4\"-1/2\" WIDE RIBBON", "\"INTO THE WILD\"",
    "1; exec will create the case 7", "select x from y where", "（株）東京",
    "ｶﾀｶﾅ ＡＢＣ １２３",
]  # fmt: skip


@pytest.mark.parametrize("value", BENIGN)
def test_benign_values_pass(value: str) -> None:
    assert classify_value(value, None) == ()


INTEGERS = ["0", "7", "42", "-5", "+5", "007", "-0042", "18446744073709551616", "9" * 60]


@pytest.mark.parametrize("value", INTEGERS)
def test_integers_give_no_finding(value: str) -> None:
    assert classify_value(value, ArgumentType.INTEGER) == ()
    assert classify_value(value, None) == ()


NOT_INTEGERS = [
    "", " ", "-", "+", "+-1", " 1", "1 ", "1\n", "1.0", "1e3", "0x10", "١٢", "１２", "1_000",
    "12a", "abc",
]  # fmt: skip


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_non_integers_violate_integer_type(value: str) -> None:
    findings = classify_value(value, ArgumentType.INTEGER)
    assert findings[0] == Finding(TYPE, "expected integer")


def test_type_violation_also_names_the_technique() -> None:
    assert kinds("1 or 1=1", ArgumentType.INTEGER) == {TYPE, SQLI}
    assert kinds("<script>alert(1)</script>", ArgumentType.INTEGER) == {TYPE, XSS}
    assert kinds("1' and 'a'='a", ArgumentType.INTEGER) == {TYPE, SQLI}


def test_number_type() -> None:
    for value in ("1", "-1.5", ".5", "1e-3", "+2.0E10"):
        assert classify_value(value, ArgumentType.NUMBER) == ()
    assert kinds("1.5 or 1=1", ArgumentType.NUMBER) == {TYPE, SQLI}
    assert classify_value("nan", ArgumentType.NUMBER)[0].detail == "expected number"


def test_string_type_has_no_type_check() -> None:
    assert classify_value("hello world", ArgumentType.STRING) == ()
    assert kinds("1 or 1=1", ArgumentType.STRING) == {SQLI}


def test_one_finding_per_kind_with_a_detail() -> None:
    findings = classify_value("1 union select 1 and sleep(5)", None)
    assert [f.kind for f in findings] == [SQLI]
    assert findings[0].detail == "union select"


def test_context_is_named_in_the_detail() -> None:
    (finding,) = classify_value("x' or 'a'='a", None)
    assert "'" in finding.detail and "break-out" in finding.detail


def test_long_values_are_classified_on_their_head() -> None:
    padding = "a" * (MAX_CLASSIFIED_CHARS * 2)
    (finding,) = classify_value("1 union select 1 " + padding, None)
    assert finding.kind is SQLI
    assert f"first {MAX_CLASSIFIED_CHARS // 1024} KiB" in finding.detail
    assert classify_value(padding + " union select 1", None) == ()


def test_finding_is_frozen_with_slots() -> None:
    finding = Finding(SQLI, "x")
    assert not hasattr(finding, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.detail = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    "value",
    [
        "1 or 1 in (1)",
        "1 or 1 glob 1",
        "1 or 1 is not 2",
        "1 or x like 1",
        "1 or x regexp 1",
        "1 or (1) is 1",
        "1 or (1) notnull",
        "1 or (1) collate nocase",
        "-1 or 1 )",
        "1 and 0x61646d696e LIKE 0x61646d696e",
        "1 offset length(zeroblob(1000000000))",
    ],
)
def test_sqli_the_prefilter_used_to_skip(value: str) -> None:
    # The tokenizer knew these; the cheap pre-filter in front of it did not let them through.
    for expected in (None, ArgumentType.INTEGER):
        kinds = {f.kind for f in classify_value(value, expected)}
        assert EvidenceKind.SQLI in kinds, (value, expected)

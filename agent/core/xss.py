"""Cross-site scripting detection on a canonical form of the value.

Canonicalization (the HTTP layer already percent-decoded): HTML character
references are decoded twice (decimal, hex, named, with or without the `;`,
and `&amp;#x3c;` double encoding), then JavaScript and CSS escapes (`\\x3c`,
`\\u003c`, `\\u{3c}`, `\\3c `, `\\j`), then text is lower-cased. URL schemes are
checked with ASCII control characters removed, as browsers drop them inside a
scheme (`java&#x09;script:`); CSS is checked with `/* */` comments removed
(`expr/**/ession(`).

Findings: a dangerous tag (`<script`, `<iframe`, `<svg`...), an event-handler
attribute inside a tag or after an attribute break-out (`" onfocus=...`), a
script URL (`javascript:`, `vbscript:`, `data:text/html`), a JavaScript string
break-out calling something (`'-alert(1)-'`), a CSS script vector
(`expression(`, `behavior:`, `-moz-binding`), HTML comment break-outs and
client-side template injection (`{{constructor.constructor(...)()}}`).

Every pattern is linear: bounded repetitions only, no nested quantifiers.
"""

from __future__ import annotations

import html
import re
from itertools import islice
from typing import Final

DANGEROUS_TAGS: Final = frozenset({
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math",
    "style", "link", "meta", "base", "form", "isindex", "xml", "import", "bgsound",
    "layer", "ilayer", "portal", "animate", "set", "handler", "xmp", "noembed",
    "plaintext", "template", "listener", "vmlframe",
})  # fmt: skip
# Candidate matches examined per pattern: bounds the work on adversarial values.
_MAX_CANDIDATES: Final = 32
# Tag names a browser never sees but a filter must: "<svgonload=...>", "<scriptx>".
_TAG_PREFIXES: Final = ("script", "iframe", "svg")

_ESCAPE_RE: Final = re.compile(
    r"\\(?:x([0-9a-f]{2})|u\{([0-9a-f]{1,6})\}|u([0-9a-f]{4})|([0-9a-f]{1,6})[ \t\n]?|(.))",
    re.IGNORECASE | re.DOTALL,
)
_OCTAL_RE: Final = re.compile(r"\\([0-3][0-7]{2}|[0-7]{2})")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]+")
_TAG_RE: Final = re.compile(r"<[/!?]{0,3}([a-z][a-z0-9:_-]{0,31})")
_HANDLER_RE: Final = re.compile(r"(?:^|[\s/\"'`;,+])(on[a-z]{3,24})[^=>\s\"']{0,40}\s{0,8}=")
_SCHEME_RE: Final = re.compile(
    r"(?:^|[^a-z0-9+.\-])(javascript|vbscript|livescript|mocha|data)\s{0,8}:"
)
_DATA_HTML_RE: Final = re.compile(r"data\s{0,8}:\s{0,8}(?:text/html|image/svg|application/x)")
_SCRIPT_CALL_RE: Final = re.compile(r"[\w$\]\)'\"]\s{0,4}[(`]|//|[;=]\s{0,4}[a-z_$]|\\u|&#")
_JS_BREAKOUT_RE: Final = re.compile(
    r"[\"'`][\s)\]}]{0,4}[-+*/%^|&;,?:<>=!~]{1,3}\s{0,4}"
    r"(?:new\s{1,4})?(\[\]|[a-z_$][\w$]{0,30})((?:[.\[][\w$'\"+\]]{1,30}){0,4})\s{0,4}[(`=]"
)
_SINKS: Final = frozenset({
    "alert", "confirm", "prompt", "eval", "print", "settimeout", "setinterval", "fetch",
    "import", "function", "atob", "document", "window", "top", "self", "parent", "this",
    "location", "string", "constructor", "execscript", "msgbox", "open", "xmlhttprequest",
    "navigator", "globalthis", "frames", "content", "opener",
})  # fmt: skip
_CSS_RE: Final = re.compile(
    r"(?:[:=\"'(]\s{0,8}expression\s{0,8}\(|behavior\s{0,8}:|-moz-binding|@import\s{0,8}(?:[\"']|url)"
    r"|url\s{0,8}\(\s{0,8}[\"']?\s{0,8}(?:javascript|vbscript|data)\s{0,8}:)"
)
_COMMENT_BREAKOUT_RE: Final = re.compile(r"(?:<!--|--!?>)\s{0,16}<[a-z/!]")
_CLOSE_SCRIPT_RE: Final = re.compile(r"</\s{0,4}(script|title|textarea|style|noscript|xmp)\b")
# Longest template expression examined: "{{constructor.constructor('...')()}}" fits.
_TEMPLATE_SPAN: Final = 200
_TEMPLATE_EVIL: Final = (
    "constructor", "$eval", "$on", "alert", "prompt", "confirm", "fromcharcode", "__proto__",
    "$emit", "call(", "apply(", "charat", "tostring", "[].", "eval(", "document", "window",
    "import(", "process", "require(",
)  # fmt: skip


def _unescape_one(match: re.Match[str]) -> str:
    hex2, braced, hex4, css, other = match.groups()
    digits = hex2 or braced or hex4 or css
    if digits is None:
        return str(other)
    code = int(digits, 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def canonicalize(value: str) -> str:
    """Decode HTML references and JS/CSS escapes, lower-case."""
    text = value
    for _ in range(2):
        if "&" not in text:
            break
        text = html.unescape(text)
    if "\\" in text:
        text = _ESCAPE_RE.sub(_unescape_one, text)
        if "&" in text:
            text = html.unescape(text)
    return text.lower()


def detect_xss(value: str) -> str | None:
    """Why `value` is a cross-site scripting attempt (a short detail), or None.

    The caller passes a length-capped value; case does not matter.
    """
    found = _detect_canonical(canonicalize(value))
    if found is None and _OCTAL_RE.search(value):
        # "\74script\76": JS octal escapes read differently from CSS hex ones.
        octal = _OCTAL_RE.sub(lambda m: chr(int(m.group(1), 8)), value)
        found = _detect_canonical(canonicalize(octal))
    return found


# Every vector needs one of these (after decoding): a tag, a handler, a script
# or data URL, a quote followed by an operator, a template, a CSS script hook.
_CANDIDATE_RE: Final = re.compile(
    r"<[a-z!/?%]|on[a-z]{3,}|script|data\s{0,8}:|[\"'`][\s)\]}]{0,4}[-+*/%^|&;,?:<>=!~]"
    r"|\{\{|\$\{|expression|behavio|binding|@import|-->|/\*"
)


def _detect_canonical(text: str) -> str | None:
    """Cheap candidate check first: most values have none of the markers."""
    plain = _CONTROL_RE.sub("", text) if _CONTROL_RE.search(text) else text  # "java\tscript:"
    return _detect(text) if _CANDIDATE_RE.search(plain) else None


def _detect(text: str) -> str | None:
    tags = list(islice(_TAG_RE.finditer(text), _MAX_CANDIDATES))
    for tag in tags:
        name = tag.group(1)
        if name in DANGEROUS_TAGS or name.startswith(_TAG_PREFIXES):
            return f"tag <{name}>"
    if tags:
        handler = _HANDLER_RE.search(text, tags[0].end())
        if handler is not None:
            return f"event handler {handler.group(1)}= in <{tags[0].group(1)}>"
    plain = _CONTROL_RE.sub("", text) if _CONTROL_RE.search(text) else text
    for scheme in islice(_SCHEME_RE.finditer(plain), _MAX_CANDIDATES):
        found = _scheme_finding(plain, scheme)
        if found is not None:
            return found
    handler = _HANDLER_RE.search(text)
    if handler is not None and _handler_outside_tag(text, handler):
        return f"event handler {handler.group(1)}= after attribute break-out"
    css_text = _without_comments(plain) if "/*" in plain else plain
    css = _CSS_RE.search(css_text)
    if css is not None:
        return f"css script vector {css.group().strip(' :=(' + chr(34) + chr(39))[:20]}"
    if _COMMENT_BREAKOUT_RE.search(text):
        return "html comment break-out"
    closing = _CLOSE_SCRIPT_RE.search(text)
    if closing is not None and ("<" in text[closing.end() :] or "(" in text):
        return f"</{closing.group(1)}> break-out"
    for breakout in islice(_JS_BREAKOUT_RE.finditer(text), _MAX_CANDIDATES):
        head, rest = breakout.group(1), breakout.group(2)
        if head in _SINKS or head == "[]" or "constructor" in rest:
            return f"script string break-out reaching {head}{rest}"[:80]
    if "{" in text and _template_injection(text):
        return "template injection"
    return None


def _without_comments(text: str) -> str:
    """Drop /* ... */ (an unclosed one runs to the end); str.find keeps it linear."""
    parts = []
    pos = 0
    while True:
        start = text.find("/*", pos)
        if start < 0:
            parts.append(text[pos:])
            return "".join(parts)
        parts.append(text[pos:start])
        end = text.find("*/", start + 2)
        if end < 0:
            return "".join(parts)
        pos = end + 2


def _template_injection(text: str) -> bool:
    """A {{...}} or ${...} expression reaching for code (not a plain "{{name}}")."""
    for opener, closer in (("{{", "}}"), ("${", "}")):
        pos = 0
        for _ in range(_MAX_CANDIDATES):
            start = text.find(opener, pos)
            if start < 0:
                break
            end = text.find(closer, start + len(opener), start + _TEMPLATE_SPAN)
            body = text[start : end if end >= 0 else start + _TEMPLATE_SPAN]
            if end >= 0 and any(marker in body for marker in _TEMPLATE_EVIL):
                return True
            pos = start + len(opener)
    return False


def _scheme_finding(plain: str, scheme: re.Match[str]) -> str | None:
    name = scheme.group(1)
    before = plain[max(0, scheme.start(1) - 16) : scheme.start(1)].rstrip()
    in_attribute = before[-1:] in ("=", "(", '"', "'", "`")
    if name == "data":
        if _DATA_HTML_RE.match(plain, scheme.start(1)) or (
            in_attribute and plain.startswith(",", scheme.end())
        ):
            return "data: URL with script"
        return None
    window = plain[scheme.end() : scheme.end() + 128]
    if in_attribute or (scheme.start(1) == 0 and window[:1] not in ("", " ")):
        return f"{name}: URL"
    if _SCRIPT_CALL_RE.search(window):
        return f"{name}: URL"
    return None


def _handler_outside_tag(text: str, handler: re.Match[str]) -> bool:
    """An on*= attribute with no tag: injected into an existing tag's attributes."""
    before = text[: handler.start(1)]
    if any(q in before for q in "\"'`"):
        return True
    # Value pasted into an unquoted attribute: "x onerror=alert(1)".
    after = text[handler.end() : handler.end() + 64].lstrip()
    starts_like_code = after[:1].isalpha() or after[:1] in ("_", "$", "[", '"', "'", "`")
    return starts_like_code and _SCRIPT_CALL_RE.search(after) is not None

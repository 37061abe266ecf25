"""SQL injection detection: fold a value into SQL tokens, then look for attack shapes.

In the spirit of libinjection: the value is read once per context the
application may have pasted it into (unquoted/numeric, '...', "...", `...`,
$$...$$, /* ... */), because a payload has to close whatever the application
opened. What follows that break-out must read as SQL (an operator,
a keyword, a comment), which ordinary text ("O'Brien", "select a size or
color") does not. On top of that, some shapes are attacks wherever they occur:
`union select`, a stacked statement after `;`, a call to a sleep/error/file
function, `@@version`, `into outfile`, a sub-select.

Canonicalization done here (the HTTP layer already percent-decoded):
case folding, every Unicode space as whitespace, `/* */` comments as whitespace,
MySQL versioned comments `/*!50000 ... */` unwrapped (MySQL runs their body),
`--` and `#` as comments to end of line, `+` as a space next to keywords
(query-string style), parentheses as separators.

Everything is a single left-to-right pass with anchored `re.match` calls whose
patterns have no nested quantifiers, so time is linear in the value length.
"""

from __future__ import annotations

import re
from typing import Final

# Token kinds (one letter, like libinjection's fingerprints).
STR: Final = "s"  # a string literal
USTR: Final = "u"  # the tail of a literal left open (the application's own quote closes it)
NUM: Final = "n"
KW: Final = "k"  # SQL keyword
LOGIC: Final = "&"  # and / or / xor / && / ||
FUNC: Final = "f"  # name immediately followed by "("
WORD: Final = "w"  # bare identifier
VAR: Final = "v"  # @var / @@var
OP: Final = "o"
LPAREN: Final = "("
RPAREN: Final = ")"
COMMA: Final = ","
SEMI: Final = ";"
COMMENT: Final = "c"
OTHER: Final = "x"

Token = tuple[str, str]

# Enough tokens to see any attack shape; the rest of a long value is not read.
MAX_TOKENS: Final = 400

_WORD_RE: Final = re.compile(r"[^\W\d][\w$]*(?:\.[\w$]+)*")
_NUM_RE: Final = re.compile(
    r"0[xX][0-9a-fA-F]+|0[bB][01]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
)
_VAR_RE: Final = re.compile(r"@@?[\w$.]*")
_VERSIONED_RE: Final = re.compile(r"\d{0,6}")
_OPERATORS: Final = (
    "<=>", "||", "&&", "<=", ">=", "<>", "!=", ":=", "==", "::", "!<", "!>",
    "=", "<", ">", "+", "-", "*", "/", "%", "^", "|", "&", "~", "!", ".", ":",
)  # fmt: skip

LOGIC_WORDS: Final = frozenset({"and", "or", "xor"})
# Keywords that are also function names: "if(1=1,...)", "insert(str,...)".
_CALLABLE_KEYWORDS: Final = frozenset(
    {"if", "insert", "mod", "time", "replace", "exists", "values"}
)
KEYWORDS: Final = frozenset({
    "select", "union", "all", "distinct", "from", "where", "order", "group", "by",
    "having", "limit", "offset", "into", "outfile", "dumpfile", "like", "rlike",
    "regexp", "between", "in", "is", "null", "true", "false", "not", "case", "when",
    "then", "else", "end", "as", "exists", "procedure", "waitfor", "delay", "time",
    "top", "join", "values", "table", "sounds", "collate", "escape", "div", "mod",
    "insert", "update", "delete", "drop", "create", "alter", "truncate", "exec",
    "execute", "declare", "shutdown", "grant", "revoke", "call", "begin", "merge",
    "set", "if", "with", "glob", "analyse", "analyze", "use", "load", "handler", "to",
})  # fmt: skip

STATEMENT_OBJECTS: Final = frozenset({
    "table", "database", "procedure", "function", "user", "view", "index", "schema",
    "trigger", "login", "temporary", "or", "event", "role", "extension", "sequence",
})  # fmt: skip

COMPARISONS: Final = frozenset({
    "=", "<", ">", "<=", ">=", "<>", "!=", "<=>", "==", "!<", "!>",
    "like", "rlike", "regexp", "between", "in", "is", "sounds", "glob", "not",
})  # fmt: skip
ARITHMETIC: Final = frozenset({"+", "-", "*", "/", "%", "^", "|", "&", "div", "mod"})
# Conditional functions sqlmap and friends wrap a comparison in: "elt(1=1,1)".
CONDITIONAL_FUNCS: Final = frozenset({"elt", "make_set", "iif", "if", "nullif", "decode", "field"})

# Calls that are an attack on their own: category shown in the finding.
DANGEROUS_FUNCS: Final = {
    **dict.fromkeys(
        ("sleep", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "benchmark",
         "dbms_pipe.receive_message", "receive_message", "dbms_lock.sleep",
         "randomblob", "zeroblob", "sleepeachrow", "dbms_session.sleep", "regexp_substring",
         "crypt_key"),
        "time-based",
    ),
    **dict.fromkeys(
        ("extractvalue", "updatexml", "name_const", "geometrycollection", "multipoint",
         "multilinestring", "multipolygon", "linestring", "polygon", "gtid_subset",
         "json_keys", "utl_inaddr.get_host_address", "utl_inaddr.get_host_name",
         "ctxsys.drithsx.sn", "dbms_utility.sqlid_to_sqlhash", "xmltype",
         "dbms_xdb_version.checkin", "ordsys.ord_dicom.getmappingxpath", "exp"),
        "error-based",
    ),
    **dict.fromkeys(
        ("load_file", "xp_cmdshell", "master..xp_cmdshell", "xp_dirtree", "xp_fileexist",
         "sp_oacreate", "sp_executesql", "sp_makewebtask", "utl_http.request",
         "utl_file.fopen", "pg_read_file", "pg_ls_dir", "lo_import", "lo_export",
         "openrowset", "opendatasource", "sys_eval", "sys_exec", "dbms_java.runjava",
         "load_extension", "pg_read_binary_file", "dblink_connect", "dblink"),
        "file/command access",
    ),
}  # fmt: skip
# Fingerprinting calls: only with an empty argument list ("user()", "version()").
INFO_FUNCS: Final = frozenset({
    "version", "database", "user", "current_user", "system_user", "session_user", "schema",
    "db_name", "user_name", "host_name", "suser_sname", "sqlite_version", "current_database",
    "current_schema", "connection_id", "last_insert_id", "uuid", "@@version",
})  # fmt: skip
# Functions an injected condition is built from (operands, not findings on their own).
SQL_FUNCS: Final = frozenset({
    "ascii", "ord", "char", "chr", "nchar", "concat", "concat_ws", "group_concat", "hex",
    "unhex", "substring", "substr", "mid", "left", "right", "length", "len", "lower",
    "upper", "if", "iif", "ifnull", "isnull", "nvl", "coalesce", "elt", "make_set",
    "cast", "convert", "count", "rand", "floor", "md5", "sha1", "instr", "locate",
    "position", "strcmp", "bin", "conv", "row", "exists", "ascii_str", "unicode",
    "string_agg", "array_agg", "to_char", "to_number", "decode", "replace", "reverse",
    "trim", "ltrim", "rtrim", "space", "repeat", "like", "char_length", "bit_length",
    "cot", "abs", "round", "mod", "least", "greatest", "case", "sum", "min", "max",
    "avg", "typeof", "quote", "zeroblob", "generate_series", "db_name",
    "object_name", "col_name", "table_name", "utl_raw.cast_to_varchar2", "xmlagg",
    "json_extract", "soundex", "current_setting", "query_to_xml", "sys_context",
}) | frozenset(DANGEROUS_FUNCS) | INFO_FUNCS  # fmt: skip

SYSTEM_CATALOGS: Final = frozenset({
    "information_schema", "sqlite_master", "sqlite_schema", "sqlite_temp_master",
    "sysobjects", "syscolumns", "sysusers", "pg_catalog", "pg_shadow", "pg_user",
    "pg_tables", "mysql", "all_tables", "all_tab_columns", "user_tables", "dba_users",
    "all_users", "sys", "master", "msysobjects", "sysibm", "dual", "v$version",
})  # fmt: skip
SQL_TYPES: Final = frozenset({
    "int", "integer", "bigint", "smallint", "numeric", "decimal", "char", "varchar",
    "nvarchar", "text", "signed", "unsigned", "binary", "float", "real", "date", "bit",
    "varchar2", "number", "sysname",
})  # fmt: skip


def _string_end(text: str, start: int, quote: str) -> int:
    """Index of the quote that closes a literal opened before `start`, or -1.

    Doubled quotes and backslash escapes stay inside (MySQL reads both).
    """
    pos = start
    n = len(text)
    while pos < n:
        hit = text.find(quote, pos)
        if hit < 0:
            return -1
        backslashes = 0
        back = hit - 1
        while back >= start and text[back] == "\\":
            backslashes += 1
            back -= 1
        if backslashes % 2:
            pos = hit + 1
            continue
        if hit + 1 < n and text[hit + 1] == quote:
            pos = hit + 2
            continue
        return hit
    return -1


def tokenize(text: str, quote: str | None = None) -> list[Token]:
    """Split `text` (already lower-cased) into SQL tokens.

    With `quote`, the text is read as the rest of a literal that the
    application opened with that quote: the part up to the closing quote
    becomes the first STR token.
    """
    tokens: list[Token] = []
    n = len(text)
    pos = 0
    if quote is not None:
        end = _string_end(text, 0, quote) if len(quote) == 1 else text.find(quote)
        if end < 0:
            return [(STR, text)]
        tokens.append((STR, text[:end]))
        pos = end + len(quote)
    versioned_open = 0
    while pos < n and len(tokens) < MAX_TOKENS:
        ch = text[pos]
        if ch.isspace() or ch == "\x00":  # NUL: C back-ends end the string there
            pos += 1
            continue
        if ch == "/" and text.startswith("/*", pos):
            if text.startswith("/*!", pos):
                # MySQL executes the body of a versioned comment: keep reading it.
                version = _VERSIONED_RE.match(text, pos + 3)
                pos = version.end() if version is not None else pos + 3
                versioned_open += 1
                continue
            end = text.find("*/", pos + 2)
            if end < 0:
                tokens.append((COMMENT, "/*"))
                break
            pos = end + 2  # a closed block comment is whitespace
            continue
        if ch == "*" and versioned_open and text.startswith("*/", pos):
            versioned_open -= 1
            pos += 2
            continue
        if ch == "#" or (ch == "-" and text.startswith("--", pos)):
            end = _line_end(text, pos)
            # Keep the character after "--": MySQL needs a space there ("-- ", "--+").
            tokens.append((COMMENT, text[pos : pos + 3] if ch == "-" else text[pos : pos + 2]))
            if end < 0:
                break
            pos = end + 1
            continue
        if ch in "'\"":
            end = _string_end(text, pos + 1, ch)
            if end < 0:
                tokens.append((USTR, text[pos + 1 :]))
                break
            tokens.append((STR, text[pos + 1 : end]))
            pos = end + 1
            continue
        if ch in "`[":
            close = "`" if ch == "`" else "]"
            end = text.find(close, pos + 1)
            if end < 0:
                end = n
            tokens.append((WORD, text[pos + 1 : end]))
            pos = end + 1
            continue
        if ch.isdigit() or (ch == "." and pos + 1 < n and text[pos + 1].isdigit()):
            match = _NUM_RE.match(text, pos)
            if match is not None:
                tokens.append((NUM, match.group()))
                pos = match.end()
                continue
        if ch == "@":
            match = _VAR_RE.match(text, pos)
            assert match is not None  # "@" alone matches
            tokens.append((VAR, match.group()))
            pos = match.end()
            continue
        if ch in "(){},;":
            kind = {"(": LPAREN, "{": LPAREN, ")": RPAREN, "}": RPAREN, ",": COMMA}.get(ch, SEMI)
            tokens.append((kind, ch))
            pos += 1
            continue
        word = _WORD_RE.match(text, pos)
        if word is not None:
            name = word.group()
            pos = word.end()
            if name in LOGIC_WORDS:
                tokens.append((LOGIC, name))
            elif name in KEYWORDS and name not in _CALLABLE_KEYWORDS:
                tokens.append((KW, name))  # "union(select(1))": parentheses as spaces
            elif _opens_call(text, pos, name):
                tokens.append((FUNC, name))
            elif name in KEYWORDS:
                tokens.append((KW, name))
            else:
                tokens.append((WORD, name))
            continue
        if ch == "+" and _plus_is_space(text, pos, tokens):
            pos += 1
            continue
        for operator in _OPERATORS:
            if text.startswith(operator, pos):
                kind = LOGIC if operator in ("||", "&&") else OP
                tokens.append((kind, operator))
                pos += len(operator)
                break
        else:
            tokens.append((OTHER, ch))
            pos += 1
    # Only a trailing comment matters ("admin'--"); inner ones were whitespace.
    return [t for i, t in enumerate(tokens) if t[0] != COMMENT or i == len(tokens) - 1]


def _line_end(text: str, pos: int) -> int:
    """End of a line comment: the first \\n or \\r (both end a line for some engine)."""
    newline = text.find("\n", pos)
    carriage = text.find("\r", pos, newline if newline >= 0 else len(text))
    return carriage if carriage >= 0 else newline


def _opens_call(text: str, pos: int, name: str) -> bool:
    """Is the word ending at `pos` a call? "(" right after it, or after comments
    ("sleep/**/(5)", "/*!sleep*/(5)"); known SQL functions may also take spaces.
    """
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == "(":
            return True
        if text.startswith("*/", pos):
            pos += 2
        elif text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            if end < 0:
                return False
            pos = end + 2
        elif ch.isspace() and name in SQL_FUNCS:
            pos += 1
        else:
            return False
    return False


def _plus_is_space(text: str, pos: int, tokens: list[Token]) -> bool:
    """A `+` next to a keyword is a query-string space ("union+select"), not addition."""
    if tokens and tokens[-1][0] in (KW, LOGIC):
        return True
    # "in+boolean+mode": between two words it is a space (identifiers are not added).
    if tokens and tokens[-1][0] == WORD and text[pos + 1 : pos + 2].isalpha():
        return True
    if text.startswith(("--", "#"), pos + 1):  # "'+or+1+--"
        return True
    word = _WORD_RE.match(text, pos + 1)
    return word is not None and (word.group() in KEYWORDS or word.group() in LOGIC_WORDS)


def _at(tokens: list[Token], i: int) -> Token:
    return tokens[i] if i < len(tokens) else ("", "")


def _is_operand(token: Token) -> bool:
    kind, text = token
    return kind in (NUM, STR, USTR, VAR, WORD, FUNC) or (
        kind == KW and text in ("null", "true", "false")
    )


def _call_looks_like_sql(tokens: list[Token], i: int) -> bool:
    """tokens[i] is a FUNC; True when its arguments read as SQL, not prose.

    "sleep(5)" and "sleep((select 1))" do; "sleep(8 hours)" does not: in SQL two
    operands are never side by side.
    """
    first = _at(tokens, i + 2)
    second = _at(tokens, i + 3)
    if first[0] == RPAREN:
        return True
    if _is_operand(first) and first[0] != FUNC:
        return second[0] in (RPAREN, COMMA, OP, LOGIC, LPAREN) or second[1] in COMPARISONS
    return first[0] in (LPAREN, FUNC, VAR) or first[1] in (
        "select", "case", "not", "null", "-", "~", "!", "+", "*",
    )  # fmt: skip


def _args_not_prose(tokens: list[Token], i: int) -> bool:
    """Looser than _call_looks_like_sql, for names no prose uses ("load_file(¿'/x')")."""
    return _call_looks_like_sql(tokens, i) or _at(tokens, i + 2)[0] == OTHER


def _statement_at(tokens: list[Token], i: int) -> str | None:
    """Name of the SQL statement starting at tokens[i], if one does."""
    kind, text = _at(tokens, i)
    nxt_kind, nxt = _at(tokens, i + 1)
    if kind not in (KW, FUNC, WORD):
        return None
    if text in ("select", "with"):
        while nxt in ("all", "distinct", "top") or (nxt_kind == NUM and tokens[i][1] == "top"):
            i += 1
            nxt_kind, nxt = _at(tokens, i + 1)
        after_kind, after = _at(tokens, i + 2)
        if nxt_kind in (VAR, FUNC, LPAREN) or nxt == "case":
            return text
        if nxt == "*":  # "select * from", not markdown "**select**"
            return text if after == "from" else None
        if nxt_kind in (NUM, STR, USTR) or nxt == "null":
            # "select 1,2" / "select 'a' from"; not "select 2 items"
            if after_kind in ("", COMMA, OP, LOGIC, COMMENT, SEMI, RPAREN) or after in (
                "from",
                "into",
                "union",
                "where",
                "as",
            ):
                return text
            return None
        if nxt_kind == WORD and after in ("from", ",", "as", "="):
            return text
        if nxt_kind == WORD and after_kind == OP:  # "select id-0 from"
            return text if "from" in (t for _, t in tokens[i + 3 : i + 10]) else None
        return None
    if text in ("drop", "create", "alter", "truncate"):
        return text if nxt in STATEMENT_OBJECTS else None
    if text == "insert":
        return text if nxt == "into" else None
    if text == "delete":
        return text if nxt == "from" else None
    if text == "update":
        return text if nxt_kind == WORD and _at(tokens, i + 2)[1] == "set" else None
    if text in ("exec", "execute"):
        if nxt_kind in (VAR, FUNC, LPAREN) or (nxt_kind == WORD and "." in nxt):
            return text
        # "exec sp_who", "exec myproc 1", not "exec will create" / "exec it's"
        after_kind = _at(tokens, i + 2)[0]
        if nxt_kind == WORD and ("_" in nxt or after_kind in ("", COMMENT, SEMI, VAR, NUM)):
            return text
        return None
    if text == "declare":
        return text if nxt_kind == VAR else None
    if text == "waitfor":
        return text if nxt in ("delay", "time") else None
    if text == "shutdown":
        return text if nxt_kind in ("", COMMENT, SEMI) else None
    if text in ("call", "if"):
        return text if FUNC in (kind, nxt_kind) else None
    if text == "set":
        return text if nxt_kind == VAR else None
    if text in ("grant", "revoke"):  # "grant connect to name"
        return text if "to" in (t for _, t in tokens[i + 2 : i + 8]) or nxt == "all" else None
    if text == "begin":
        return text if nxt_kind in (KW, FUNC, SEMI) else None
    return None


def _condition_at(tokens: list[Token], i: int) -> bool:
    """True when tokens[i:] start a boolean condition an injection would append.

    "1=1", "'a'='a", "true", "1--", "sleep(5)", "(select ...)", "x like '%'";
    not "pepper", "2 people" or "1960" (prose after "or"/"and").
    """
    while _at(tokens, i)[0] == LPAREN or _at(tokens, i)[1] in ("not", "!", "-", "~"):
        i += 1
    kind, text = _at(tokens, i)
    nxt_kind, nxt = _at(tokens, i + 1)
    if text in ("true", "false") and nxt_kind in ("", COMMENT, SEMI, RPAREN, LOGIC):
        return True
    # "1 or 1--" but not "1950 or 1960" / "00 and 3" (prose and product names).
    if kind == NUM and nxt_kind in (COMMENT, SEMI, RPAREN, LOGIC):
        return True
    if text == "select":
        return _statement_at(tokens, i) is not None
    if text == "exists":
        return nxt_kind == LPAREN
    if text == "case":
        return _case_at(tokens, i)
    if kind == FUNC:
        return _call_looks_like_sql(tokens, i) and (
            text in SQL_FUNCS
            or (nxt_kind == LPAREN and _at(tokens, i + 2)[0] in (NUM, STR, USTR, LPAREN))
        )
    j = i + 1
    while _at(tokens, j)[0] == RPAREN:  # "') or ('x')=('x"
        j += 1
    for _ in range(8):  # concatenation before the comparison: "'adm'||'in'='admin'"
        joiner = _at(tokens, j)
        if joiner[1] not in ("||", "+") or not _is_operand(_at(tokens, j + 1)):
            break
        j += 2
    nxt_kind, nxt = _at(tokens, j)
    if _is_operand((kind, text)) and (nxt in COMPARISONS and nxt_kind in (OP, KW)):
        after = _at(tokens, j + 1)
        if nxt in ("is", "not"):  # "is null", "is not null", "not like ..."
            return after[1] in ("null", "not", "true", "false", "like", "in", "between")
        if after[1] in ("-", "~", "!", "+"):  # "1=-1"
            after = _at(tokens, j + 2)
        return _is_operand(after) or after[0] == LPAREN
    # "' or ''-'": constants combined arithmetically are as good as a comparison.
    if kind == STR and nxt_kind == OP and nxt in ARITHMETIC:
        return _at(tokens, j + 1)[0] in (STR, USTR) and _at(tokens, j + 2)[0] in (
            "", COMMENT, LOGIC,
        )  # fmt: skip
    return False


def _case_at(tokens: list[Token], i: int) -> bool:
    """ "case [x] when ... then" (prose has "in case" but not the rest)."""
    window = [text for _, text in tokens[i + 1 : i + 4]]
    if "when" not in window:
        return False
    return "then" in (text for _, text in tokens[i + 2 : i + 40])


def _breakout_findings(tokens: list[Token], start: int, quoted: bool) -> str | None:
    """Shapes after the break-out; also after a leading comparison ("x`=`1` and ...")."""
    if quoted and [t for _, t in tokens[start : start + 3]] == ["in", "boolean", "mode"]:
        start += 3  # MySQL full-text search: "match(x) against('...' in boolean mode)"
    for _ in range(3):
        found = _breakout_at(tokens, start, quoted)
        if found is not None or not quoted:
            return found
        kind, text = _at(tokens, start)
        if not (kind == OP and text in COMPARISONS and _is_operand(_at(tokens, start + 1))):
            return None
        start += 2
    return None


def _breakout_at(tokens: list[Token], start: int, quoted: bool) -> str | None:
    """Shapes that follow the point where the value leaves the application's literal."""
    i = start
    closed_parens = 0
    while _at(tokens, i)[0] == RPAREN:
        i += 1
        closed_parens += 1
    kind, text = _at(tokens, i)
    nxt_kind, nxt = _at(tokens, i + 1)
    where = "quote" if quoted else ("parenthesis" if closed_parens else "value")
    if kind == COMMENT and (quoted or closed_parens) and _is_sql_comment(text):
        return f"comment after {where} break-out"
    if kind == LOGIC and _condition_at(tokens, i + 1):
        return f"boolean condition after {where} break-out ({text})"
    if kind == KW and text in ("order", "group") and nxt == "by":
        after_kind = _at(tokens, i + 2)[0]
        if after_kind in (NUM, FUNC, LPAREN) or (after_kind == WORD and quoted):
            return f"{text} by after {where} break-out"
    if kind == KW and text in ("having", "where") and _condition_at(tokens, i + 1):
        return f"{text} clause after {where} break-out"
    if kind == KW and text == "limit" and nxt_kind == NUM and quoted:
        return f"limit after {where} break-out"
    if kind == KW and text == "procedure" and nxt == "analyse":
        return "procedure analyse"
    if (quoted or closed_parens) and _statement_at(tokens, i) is not None:
        # MS SQL runs a second statement without ";": "' insert into users ... --"
        return f"statement after {where} break-out ({text})"
    balanced = not quoted or _balanced_tail(tokens)
    if (
        quoted
        and balanced
        and (kind == OP or text == "||")
        and text not in (".", ":")
        and (nxt_kind in (STR, USTR, NUM, LPAREN, VAR) or (nxt_kind == FUNC and nxt in SQL_FUNCS))
        and (nxt_kind in (USTR, LPAREN, FUNC) or _at(tokens, i + 2)[0] in _CONTINUES_SQL)
    ):
        return f"expression after quote break-out ({text})"
    if kind == KW and (quoted or closed_parens) and balanced and _keyword_continues(tokens, i):
        return f"{text} after {where} break-out"
    if (kind == OP and text in ARITHMETIC and not quoted) and (
        (nxt_kind == FUNC and nxt in SQL_FUNCS)
        or (nxt_kind == LPAREN and _at(tokens, i + 2)[1] == "select")
    ):
        return f"expression after {where} ({text} {nxt})"
    return None


def _keyword_continues(tokens: list[Token], i: int) -> bool:
    """tokens[i] is a keyword right after a break-out: does valid SQL follow it?"""
    text = tokens[i][1]
    nxt_kind, nxt = _at(tokens, i + 1)
    after_kind, after = _at(tokens, i + 2)
    ends = after_kind in ("", COMMENT, SEMI, RPAREN, LOGIC)
    if text == "in":
        return nxt_kind == LPAREN
    if text == "is":
        return nxt in ("null", "not", "true", "false")
    if text == "between":
        return _is_operand((nxt_kind, nxt)) and after == "and"
    if text in ("like", "rlike", "regexp"):
        if nxt_kind == USTR:  # "' like '%"
            return bool(nxt) and after_kind == ""
        return (_is_operand((nxt_kind, nxt)) or nxt_kind == LPAREN) and (ends or after_kind == OP)
    if text == "as":
        return nxt_kind == WORD and (ends or after in ("where", "from", ",", "union"))
    if text == "union":  # "' union user_id>0--"
        return (
            nxt in ("all", "select", "distinct")
            or nxt_kind == LPAREN
            or (nxt_kind == WORD and after_kind == OP)
        )
    if text == "from":  # "1) from users where username="
        return nxt_kind == WORD and (ends or after_kind in (KW, COMMA))
    return False


# Tokens after an operand that keep a SQL expression going (not prose: "16\" wide").
_CONTINUES_SQL: Final = ("", COMMENT, LOGIC, OP, SEMI, RPAREN, KW)


def _balanced_tail(tokens: list[Token]) -> bool:
    """After a quote break-out the application's closing quote still follows the
    value: a real injection ends by reopening a literal ("... and 'a'='a"), with a
    comment, or a ";". A tail like "... WIDE RIBBON" would be a SQL syntax error.
    """
    kind, text = tokens[-1]
    if kind == USTR:
        return len(text) <= 24 and not any(c.isspace() for c in text)
    return kind in (COMMENT, SEMI)


def _is_sql_comment(text: str) -> bool:
    """ "#", "/*", or "--" then end, space, "-" or "+" (not "--><img", not "#2")."""
    if text.startswith("#"):
        return len(text) == 1 or not text[1].isalnum()
    return not text.startswith("--") or len(text) == 2 or text[2] in " \t\r\n\v\f\x00-+"


# Stored procedures called without parentheses ("exec master..xp_cmdshell 'dir'").
_PROCEDURES: Final = frozenset({
    "xp_cmdshell", "xp_dirtree", "xp_fileexist", "xp_regread", "xp_regwrite", "sp_oacreate",
    "sp_oamethod", "sp_executesql", "sp_makewebtask", "sp_configure", "sp_addlogin",
    "sp_addsrvrolemember", "xp_servicecontrol", "xp_availablemedia",
})  # fmt: skip


def _anywhere_findings(tokens: list[Token]) -> str | None:
    """Shapes that are an attack wherever they occur in the value."""
    for i, (kind, text) in enumerate(tokens):
        if kind == KW:
            if text == "union":
                j = i + 1
                while _at(tokens, j)[1] in ("all", "distinct") or _at(tokens, j)[0] == LPAREN:
                    j += 1
                if _at(tokens, j)[1] == "select" or (
                    _at(tokens, j)[1] == "values" and _at(tokens, j + 1)[0] == LPAREN
                ):
                    return "union select"
            elif text == "waitfor" and _at(tokens, i + 1)[1] in ("delay", "time"):
                return "time-based: waitfor delay"
            elif text == "into" and _at(tokens, i + 1)[1] in ("outfile", "dumpfile"):
                return f"into {_at(tokens, i + 1)[1]}"
            elif text == "select" and i and tokens[i - 1][0] in (LPAREN, RPAREN, OP, LOGIC):
                if _statement_at(tokens, i) and (
                    tokens[i - 1][0] == LPAREN or _select_has_body(tokens, i)
                ):
                    return "sub-select"
            elif text == "case" and _case_at(tokens, i):
                return "case when expression"
            elif text in ("where", "having") and _constant_comparison(tokens, i + 1):
                return f"{text} with constant comparison"
            elif text == "from" and _at(tokens, i + 1)[0] == WORD:
                table = _at(tokens, i + 1)[1]
                catalog = table.split(".", 1)[0]
                # "from dual" / "from sys" alone are too common; "sys.objects" is not.
                if catalog in SYSTEM_CATALOGS and ("." in table or catalog not in {"dual", "sys"}):
                    return f"system catalog {catalog}"
        elif kind == SEMI:
            statement = _statement_at(tokens, i + 1)
            if statement is not None:
                return f"stacked query ({statement})"
        elif kind == FUNC:
            category = DANGEROUS_FUNCS.get(text) or DANGEROUS_FUNCS.get(text.rsplit(".", 1)[-1])
            # exp() is ordinary maths unless fed "~(select ...)" (MySQL overflow error).
            if (category is not None and _args_not_prose(tokens, i)) and (
                text != "exp" or _at(tokens, i + 2)[1] in ("~", "(", "select")
            ):
                return f"{category}: {text}()"
            if (text in INFO_FUNCS and _at(tokens, i + 2)[0] == RPAREN) and (
                i == 0 or tokens[i - 1][0] in (OP, LOGIC, LPAREN, COMMA, KW, SEMI)
            ):
                return f"fingerprinting: {text}()"
            if (
                text == "convert"
                and _at(tokens, i + 2)[1] in SQL_TYPES
                and (_at(tokens, i + 3)[0] == COMMA)
            ):
                return "error-based: convert()"
            if text == "cast" and _cast_as_type(tokens, i):
                return "error-based: cast()"
            if text in ("char", "chr", "nchar") and _numeric_args(tokens, i) >= 2:
                return f"encoded string: {text}()"
            if text in CONDITIONAL_FUNCS and _constant_comparison(tokens, i + 2):
                return f"conditional {text}()"
        elif kind == LPAREN and (length := _constant_comparison(tokens, i + 1)):
            after = _at(tokens, i + 1 + length)
            if after[0] == RPAREN and (
                _at(tokens, i + 2 + length)[0] in (OP, COMMA)
                or (i and tokens[i - 1][0] in (OP, COMMA, LOGIC))
            ):
                return "arithmetic on a comparison"
        elif kind == WORD and text.rsplit(".", 1)[-1] in _PROCEDURES:
            return f"file/command access: {text}"
        elif kind == VAR and text.startswith("@@") and len(text) > 2:
            return f"system variable {text}"
    return None


def _select_has_body(tokens: list[Token], i: int) -> bool:
    """A select that reads data: a from clause, a call or a variable soon after."""
    return (
        any(kind in (FUNC, VAR) or text == "from" for kind, text in tokens[i + 1 : i + 16])
        or _at(tokens, i + 1)[0] == LPAREN
    )


def _constant_comparison(tokens: list[Token], i: int) -> int:
    """Length of the constant comparison at tokens[i] ("1=1", "'a'='b'", "5423<>5424",
    "1 between 2 and 3": a tautology probe), 0 if there is none.
    """
    left, op, right = _at(tokens, i), _at(tokens, i + 1), _at(tokens, i + 2)
    if left[0] not in (NUM, STR, USTR) or right[0] not in (NUM, STR, USTR):
        return 0
    if op[1] == "between":
        upper = _at(tokens, i + 4)[0] in (NUM, STR, USTR)
        return 5 if _at(tokens, i + 3)[1] == "and" and upper else 0
    return (
        3 if op[1] in ("=", "<", ">", "<=", ">=", "<>", "!=", "<=>", "==", "like", "rlike") else 0
    )


def _cast_as_type(tokens: list[Token], i: int) -> bool:
    """cast( ... as TYPE) with a SQL-looking argument."""
    depth = 0
    for j in range(i + 1, min(len(tokens), i + 60)):
        kind, text = tokens[j]
        if kind == LPAREN:
            depth += 1
        elif kind == RPAREN:
            depth -= 1
            if depth == 0:
                return False
        elif depth == 1 and text == "as":
            return _at(tokens, j + 1)[1] in SQL_TYPES and j > i + 2
    return False


def _numeric_args(tokens: list[Token], i: int) -> int:
    """How many comma-separated numbers follow tokens[i] = "char(" (0 if anything else)."""
    count = 0
    j = i + 2
    while True:
        if _at(tokens, j)[0] != NUM:
            return 0
        count += 1
        sep = _at(tokens, j + 1)[0]
        if sep == RPAREN:
            return count
        if sep != COMMA:
            return 0
        j += 2


# Where the application may have pasted the value: unquoted, in a literal or
# identifier, in PostgreSQL $$...$$, inside a /* comment */.
_CONTEXTS: Final = (None, "'", '"', "`", "$$", "*/")


def detect_sqli(value: str) -> str | None:
    """Why `value` is a SQL injection (a short detail), or None.

    The caller passes the text already lower-cased and length-capped.
    """
    for quote in _CONTEXTS:
        if quote is not None and quote not in value:
            continue
        tokens = tokenize(value, quote)
        found = _anywhere_findings(tokens)
        if found is None:
            found = _context_findings(tokens, quote)
        if found is not None:
            return found if quote is None else f"{found} [{quote} context]"
    return None


def _context_findings(tokens: list[Token], quote: str | None) -> str | None:
    if quote is not None:
        return _breakout_findings(tokens, 1, quoted=True) if len(tokens) > 1 else None
    start = 0
    while _at(tokens, start)[1] in ("-", "+", "("):
        start += 1
    first_kind, _ = _at(tokens, start)
    if first_kind in (NUM, WORD, STR, USTR, VAR):
        return _breakout_findings(tokens, start + 1, quoted=False)
    # The value itself starts with SQL: " OR 1=1", " ORDER BY 1--", ") AND ...".
    return _breakout_findings(tokens, start, quoted=False)

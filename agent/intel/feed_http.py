"""One conditional HTTP(S) GET of a feed document: ETag / If-Modified-Since, timeout, size cap.

Network failures come back as `FetchFailure` values, never raised: the
caller keeps the last good copy and reports the failure with name and url.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

_CHUNK = 64 * 1024
USER_AGENT = "rustyflag-agent-feeds/1"


@dataclass(frozen=True, slots=True)
class FetchFailure:
    message: str


@dataclass(frozen=True, slots=True)
class NotModified:
    """304: the cached copy is current; no parsing, no reload."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str | None
    last_modified: str | None


HttpResult = Fetched | NotModified | FetchFailure
_SCHEMES = ("http://", "https://")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp:// or from https to http; a feed does neither."""

    def redirect_request(  # noqa: PLR0917 (signature fixed by urllib)
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        downgrade = req.full_url.lower().startswith("https://") and not newurl.lower().startswith(
            "https://"
        )
        if downgrade or not newurl.lower().startswith(_SCHEMES):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to {newurl!r} refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Verifying context (system CAs, or only `ca_file` when given); unverified if asked to."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def fetch_document(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    context: ssl.SSLContext,
    etag: str | None = None,
    last_modified: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResult:
    """GET `url` within `timeout` seconds overall; a body over `max_bytes` is a failure."""
    if not url.lower().startswith(_SCHEMES):
        return FetchFailure("only http:// and https:// feeds are fetched")
    # Scheme checked just above (S310), redirects by _HttpOnlyRedirects.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"User-Agent": USER_AGENT, **(headers or {})}
    )
    if etag:
        request.add_header("If-None-Match", etag)
    if last_modified:
        request.add_header("If-Modified-Since", last_modified)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _HttpOnlyRedirects()
    )
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if (
                declared is not None
                and declared.isascii()
                and declared.isdigit()
                and int(declared) > max_bytes
            ):
                return FetchFailure(f"document is {declared} bytes, over max_bytes={max_bytes}")
            body = bytearray()
            while chunk := response.read(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    return FetchFailure(f"document exceeds max_bytes={max_bytes}")
                # The socket timeout bounds each read; this bounds a slow trickle.
                if time.monotonic() > deadline:
                    return FetchFailure(f"download took longer than timeout={timeout}s")
            return Fetched(
                bytes(body),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return NotModified()
        return FetchFailure(f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        return FetchFailure(f"cannot fetch: {exc.reason}")
    except (TimeoutError, OSError, HTTPException, ValueError) as exc:
        return FetchFailure(f"cannot fetch: {type(exc).__name__}: {exc}")

"""TAXII 2.1 collections: page new objects with `added_after`, merge them into one bundle.

taxii2-client does the protocol; a bounded `requests` session under it adds
what it lacks: a timeout on every request, a size cap on every response, and
the `X-TAXII-Date-Added-Last` header (the client returns only the JSON), from
which the next `added_after` comes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from taxii2client.v21 import Collection, as_pages

from agent.intel.feed_http import USER_AGENT

# A server that keeps saying "more" cannot keep the agent paging forever.
MAX_PAGES = 10_000
_CHUNK = 64 * 1024
_BUNDLE_NAMESPACE = uuid.UUID("8d2a4c1e-5b7f-4e0a-9c3d-2f6b1a7e9d40")


class ResponseTooLarge(requests.RequestException):
    pass


class _BoundedSession(requests.Session):
    """Every request gets the feed's timeout; every body is read under the size cap."""

    def __init__(self, timeout: float, max_bytes: int) -> None:
        super().__init__()
        self.feed_timeout = timeout
        self.max_bytes = max_bytes
        self.date_added_last: list[str] = []
        self.bytes_read = 0
        self.mount("https://", HTTPAdapter(max_retries=0))
        self.mount("http://", HTTPAdapter(max_retries=0))

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.feed_timeout)
        # Per request: else REQUESTS_CA_BUNDLE in the environment overrides the session's
        # verify (requests#3829), dropping the feed's ca_file or verify_tls=false.
        kwargs.setdefault("verify", self.verify)
        kwargs["stream"] = True
        response = super().request(method, url, *args, **kwargs)
        asked = url.decode() if isinstance(url, bytes) else url
        if asked.lower().startswith("https://") and not response.url.lower().startswith("https://"):
            response.close()
            raise requests.RequestException(f"redirect from https to {response.url!r} refused")
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > self.max_bytes:
                    raise ResponseTooLarge(
                        f"TAXII response exceeds max_bytes={self.max_bytes}", response=response
                    )
        finally:
            response.close()
        # requests' documented way to hand a fully read body back to its callers.
        response._content = bytes(body)
        self.bytes_read += len(body)
        added = response.headers.get("X-TAXII-Date-Added-Last")
        if added:
            self.date_added_last.append(added)
        return response


@dataclass(frozen=True, slots=True)
class TaxiiFetch:
    objects: tuple[Mapping[str, Any], ...]
    # The newest date_added the server reported, for the next `added_after`.
    added_after: str | None
    bytes_read: int
    pages: int


def collection_url(url: str, collection: str, api_root: str | None) -> str:
    """A full collection URL from a collection id (joined to api_root, else url) or a URL."""
    if collection.startswith(("http://", "https://")):
        return collection if collection.endswith("/") else collection + "/"
    root = (api_root or url).rstrip("/")
    return f"{root}/collections/{collection}/"


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def newest_timestamp(stamps: Iterable[str | None]) -> str | None:
    best: tuple[datetime, str] | None = None
    for stamp in stamps:
        parsed = _parse_time(stamp) if stamp else None
        if stamp and parsed is not None and (best is None or parsed > best[0]):
            best = (parsed, stamp)
    return best[1] if best else None


def fetch_collection(
    url: str,
    *,
    added_after: str | None,
    timeout: float,
    max_bytes: int,
    page_size: int,
    verify: bool | str,
    auth: requests.auth.AuthBase | tuple[str, str] | None,
) -> TaxiiFetch:
    """Every object added after `added_after` (all when None). Raises on network/protocol errors."""
    session = _BoundedSession(timeout, max_bytes)
    session.verify = verify
    session.auth = auth
    session.headers["User-Agent"] = USER_AGENT
    collection = Collection(url, verify=verify)
    # The client builds its own session; ours replaces it before the first request.
    collection._conn.session.close()
    collection._conn.session = session
    filters: dict[str, str] = {"added_after": added_after} if added_after else {}
    objects: list[Mapping[str, Any]] = []
    pages = 0
    try:
        for envelope in as_pages(collection.get_objects, per_request=page_size, **filters):
            pages += 1
            if not isinstance(envelope, dict):
                raise ValueError("TAXII envelope is not a JSON object")
            page = envelope.get("objects") or []
            if not isinstance(page, list):
                raise ValueError("TAXII envelope 'objects' is not a list")
            objects.extend(o for o in page if isinstance(o, dict))
            if pages >= MAX_PAGES:
                raise ValueError(f"collection still has more after {MAX_PAGES} pages")
    finally:
        session.close()
    newest = newest_timestamp([added_after, *session.date_added_last])
    return TaxiiFetch(tuple(objects), newest, session.bytes_read, pages)


def _version_key(obj: Mapping[str, Any]) -> datetime:
    for key in ("modified", "created"):
        value = obj.get(key)
        if isinstance(value, str) and (parsed := _parse_time(value)) is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def merge_objects(
    cached: Iterable[Mapping[str, Any]], fetched: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], int]:
    """Objects by id, newest `modified` (else `created`) wins; revoked objects drop out.

    Returns the merged objects (sorted by type and id, so the bundle is
    byte-stable) and how many fetched objects changed something.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    revoked: set[str] = set()
    for obj in cached:
        if isinstance(obj.get("id"), str):
            by_id[obj["id"]] = obj
    changed = 0
    for obj in fetched:
        obj_id = obj.get("id")
        if not isinstance(obj_id, str):
            continue
        old = by_id.get(obj_id)
        if old is not None and _version_key(old) > _version_key(obj):
            continue  # an older version than the one we hold
        if old == obj:
            continue
        by_id[obj_id] = obj
        changed += 1
        if obj.get("revoked") is True:
            revoked.add(obj_id)
    for obj_id in revoked:
        by_id.pop(obj_id, None)
    merged = sorted(by_id.values(), key=lambda o: (str(o.get("type")), str(o.get("id"))))
    return merged, changed


def bundle_text(feed_name: str, objects: Iterable[Mapping[str, Any]]) -> str:
    """One STIX 2.1 bundle; its id depends only on the feed name, so equal content hashes equal."""
    bundle = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid5(_BUNDLE_NAMESPACE, feed_name)}",
        "objects": list(objects),
    }
    return json.dumps(bundle, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def bundle_objects(text: str) -> list[Mapping[str, Any]] | None:
    """The objects of a cached bundle; None if it is not one (then we rebuild from the server)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    objects = raw.get("objects", []) if isinstance(raw, dict) else None
    if not isinstance(objects, list):
        return None
    return [o for o in objects if isinstance(o, dict)]

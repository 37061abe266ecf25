"""Loopback servers for the feed tests: medallion (OASIS TAXII 2.1) and a small HTTPS server.

Everything binds 127.0.0.1 on a free port; starts and stops are bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from taxii2client.v21 import Collection

LOOPBACK = "127.0.0.1"
COLLECTION_ID = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
OTHER_COLLECTION_ID = "52892447-4d7e-4f70-b94d-d7f22742ff63"
READER = ("reader", "reader-pass")
WRITER = ("writer", "writer-pass")
START_TIMEOUT = 15.0

# Runs medallion's Flask app (the same calls as its `medallion` script) on the given port.
_MEDALLION_LAUNCHER = """
import json, sys, logging
from medallion import application_instance, register_blueprints, set_config
config = json.load(open(sys.argv[1]))
for prop in ("users", "taxii", "backend"):
    set_config(application_instance, prop, config)
register_blueprints(application_instance)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
tls = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
application_instance.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True, ssl_context=tls)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _medallion_config(data_file: Path) -> dict[str, Any]:
    return {
        "backend": {
            "module_class": "MemoryBackend",
            "module": "medallion.backends.memory_backend",
            "filename": str(data_file),
        },
        "users": dict([READER, WRITER]),
        "taxii": {"max_page_size": 100},
    }


def _medallion_data(base: str) -> dict[str, Any]:
    return {
        "/discovery": {
            "title": "rustyflag test TAXII server",
            "default": f"{base}/api1/",
            "api_roots": [f"{base}/api1/"],
        },
        "api1": {
            "information": {
                "title": "api1",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 9765625,
            },
            "status": [],
            "collections": [
                {
                    "id": collection_id,
                    "title": f"fleet intel {collection_id[:8]}",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
                for collection_id in (COLLECTION_ID, OTHER_COLLECTION_ID)
            ],
        },
    }


@dataclass
class MedallionServer:
    """A medallion process on loopback; `add` posts STIX objects as the writer."""

    workdir: Path
    # (cert, key): serve HTTPS with this certificate.
    tls: tuple[Path, Path] | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def api_root(self) -> str:
        return f"{self.base}/api1/"

    @property
    def collection_url(self) -> str:
        return self.url_of(COLLECTION_ID)

    def url_of(self, collection_id: str) -> str:
        return f"{self.api_root}collections/{collection_id}/"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data_file = self.workdir / "medallion-data.json"
        config_file = self.workdir / "medallion-config.json"
        data_file.write_text(json.dumps(_medallion_data(self.base)))
        config_file.write_text(json.dumps(_medallion_config(data_file)))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _MEDALLION_LAUNCHER,
                str(config_file),
                str(self.port),
                *([str(self.tls[0]), str(self.tls[1])] if self.tls else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"medallion exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("medallion did not start in time")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def add(self, objects: Sequence[Mapping[str, Any]], collection_id: str = COLLECTION_ID) -> None:
        collection = Collection(
            self.url_of(collection_id),
            user=WRITER[0],
            password=WRITER[1],
            verify=str(self.tls[0]) if self.tls else True,
        )
        # requests would let REQUESTS_CA_BUNDLE override `verify` (requests#3829).
        collection._conn.session.trust_env = False
        try:
            status = collection.add_objects(
                {"type": "bundle", "id": "bundle--" + _uuid(), "objects": list(objects)},
                wait_for_completion=True,
                timeout=10,
            )
        finally:
            collection.close()
        assert status.status == "complete", status
        assert status.failure_count == 0, status.failures
        # medallion stamps date_added with the request time; a later post must land later.
        time.sleep(0.01)


def _uuid() -> str:
    return str(uuid.uuid4())


@contextlib.contextmanager
def medallion(workdir: Path, tls: tuple[Path, Path] | None = None) -> Iterator[MedallionServer]:
    server = MedallionServer(workdir, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- STIX objects --------------------------------------------------------------------------


def indicator(address: str, *, modified: str = "2026-01-01T00:00:00.000Z") -> dict[str, Any]:
    kind = "ipv6-addr" if ":" in address else "ipv4-addr"
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--" + _uuid(),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "name": f"fleet IOC {address}",
        "pattern": f"[{kind}:value = '{address}']",
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
        "confidence": 80,
    }


def campaign_objects(path: Path) -> list[dict[str, Any]]:
    """The objects of a bundle file (the Rusty Flag STIX fixture)."""
    objects: list[dict[str, Any]] = json.loads(path.read_text())["objects"]
    return objects


# -- HTTPS ---------------------------------------------------------------------------------


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl CLI): (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@dataclass
class Document:
    """What the HTTPS server serves, and what it saw."""

    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    send_length: bool = True
    # Answer every path but this one with a 302 to `redirect_to`.
    redirect_to: str | None = None
    serve_path: str = "/final"
    requests: list[dict[str, str]] = field(default_factory=list)
    full_responses: int = 0


class _Handler(BaseHTTPRequestHandler):
    document: Document

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        doc = self.server.document  # type: ignore[attr-defined]
        doc.requests.append(dict(self.headers.items()))
        if doc.redirect_to is not None and self.path != doc.serve_path:
            self.send_response(302)
            self.send_header("Location", doc.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if doc.etag is not None and self.headers.get("If-None-Match") == doc.etag:
            self.send_response(304)
            self.send_header("ETag", doc.etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        if doc.etag is not None:
            self.send_header("ETag", doc.etag)
        if doc.last_modified is not None:
            self.send_header("Last-Modified", doc.last_modified)
        if doc.send_length:
            self.send_header("Content-Length", str(len(doc.body)))
        else:
            self.close_connection = True  # body ends at close: no length to check up front
        self.end_headers()
        self.wfile.write(doc.body)
        doc.full_responses += 1


@contextlib.contextmanager
def https_server(cert: Path, key: Path, document: Document) -> Iterator[str]:
    """Serve `document` over TLS on loopback; yields the base URL."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    server.document = document  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port that completes TCP handshakes (kernel backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        yield f"{LOOPBACK}:{sock.getsockname()[1]}"

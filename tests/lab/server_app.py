"""A deliberately vulnerable stand-in for trello-octometric's metrics-ui server.

CVE-2015-10023: metrics-ui/server/srv.go built its SQL by concatenating the
`num` path segment of `GET /api/totals/last/{num}` and `/api/diffs/last/{num}`.
This app does the same against SQLite, so an injection in the lab really
reads data it should not (the `users` table). NEVER run it outside the lab.

Run inside the server namespace: `python -m tests.lab.server_app` (HTTP on 80
and 8080, TCP echo on 7777, UDP echo on 9999, all dual-stack on `::`).
Host side: `start_in(netns)` / `Lab.start_server_app()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import socketserver
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from tests.lab.netns import Netns

HTTP_PORTS = (80, 8080)
TCP_ECHO_PORT = 7777
UDP_ECHO_PORT = 9999
SECRET = "flag{rusty-flag-lab-secret}"
_DB_URI = "file:rflab-metrics?mode=memory&cache=shared"

FAKE_SRV_GO = """\
// metrics-ui/server/srv.go (lab copy of the vulnerable handler, CVE-2015-10023)
package main

func totalsHandler(w http.ResponseWriter, r *http.Request) {
\tnum := mux.Vars(r)["num"]
\trows, err := db.Query("SELECT * FROM (SELECT date, total FROM totals " +
\t\t"ORDER BY date DESC LIMIT " + num + ") ORDER BY date ASC")
\t...
}
"""


def _seed(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE totals (date TEXT, total INTEGER);
        CREATE TABLE diffs (date TEXT, diff INTEGER);
        CREATE TABLE users (name TEXT, secret TEXT);
        """
    )
    days = [f"2015-01-{d:02d}" for d in range(1, 11)]
    totals = [(d, 100 + 7 * i) for i, d in enumerate(days)]
    db.executemany("INSERT INTO totals VALUES (?, ?)", totals)
    db.executemany("INSERT INTO diffs VALUES (?, ?)", [(d, 7 + i % 3) for i, d in enumerate(days)])
    db.execute("INSERT INTO users VALUES ('admin', ?)", (SECRET,))
    db.commit()


def vulnerable_query(table: str, num: str) -> str:
    """The query as srv.go built it: `num` concatenated, never bound."""
    column = "total" if table == "totals" else "diff"
    return (
        f"SELECT * FROM (SELECT date, {column} FROM {table} "  # concatenated: the point of the lab
        "ORDER BY date DESC LIMIT " + num + ") ORDER BY date ASC"
    )


def run_vulnerable(table: str, num: str) -> tuple[int, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(_DB_URI, uri=True)) as db:
        try:
            rows = db.execute(vulnerable_query(table, num)).fetchall()
        except sqlite3.Error as exc:
            # Like the Go app, the SQL error text goes back to the client.
            return 500, {"error": f"sql: {exc}"}
    return 200, {"rows": [list(r) for r in rows]}


class MetricsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body are two writes: without this, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True
    server_version = "metrics-ui-lab/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.client_address[0]} {format % args}", flush=True)

    def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj))

    def _metrics(self, table: str, num: str | None) -> None:
        if num is None:
            self._json(400, {"error": "missing num"})
            return
        self._json(*run_vulnerable(table, num))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)  # like Go's r.URL.Path: decoded before routing
        query = parse_qs(url.query)
        for table in ("totals", "diffs"):
            prefix = f"/api/{table}/last/"
            if path.startswith(prefix):
                self._metrics(table, path[len(prefix):])
                return
            if path == f"/api/{table}":
                self._metrics(table, query.get("num", [None])[0])
                return
        if path == "/metrics-ui/server/srv.go":
            self._send(200, FAKE_SRV_GO, "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, "<html><body>metrics-ui lab</body></html>", "text/html")
        elif path == "/health":
            self._send(200, "ok", "text/plain")
        elif path == "/api/echo":
            # Reflected unescaped on purpose: an XSS sink for the lab.
            q = query.get("q", [""])[0]
            self._send(200, f"<html><body>{q}</body></html>", "text/html")
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20)).decode("utf-8", "replace")
        path = unquote(urlsplit(self.path).path)
        form = parse_qs(body)
        for table in ("totals", "diffs"):
            if path == f"/api/{table}":
                self._metrics(table, form.get("num", [None])[0])
                return
        self._json(404, {"error": "not found"})


class DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30.0)
        with contextlib.suppress(OSError):
            while data := sock.recv(65535):
                sock.sendall(data)


class DualStackTCPEcho(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def udp_echo_forever(sock: socket.socket) -> None:
    while True:
        with contextlib.suppress(OSError):
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)


def serve(http_ports: tuple[int, ...], tcp_echo: int, udp_echo: int) -> None:
    keeper = sqlite3.connect(_DB_URI, uri=True, check_same_thread=False)  # keeps the DB alive
    _seed(keeper)
    servers: list[socketserver.BaseServer] = [
        DualStackHTTPServer(("::", port), MetricsHandler) for port in http_ports
    ]
    servers.append(DualStackTCPEcho(("::", tcp_echo), EchoHandler))
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", udp_echo))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    threads.append(threading.Thread(target=udp_echo_forever, args=(udp,), daemon=True))
    for t in threads:
        t.start()
    print("READY", flush=True)
    threads[0].join()


@dataclass(slots=True)
class ServerApp:
    """The running app: its process (tracked by the lab) and its log file."""

    netns_name: str
    proc: subprocess.Popen[Any]
    log_path: Path
    http_ports: tuple[int, ...] = HTTP_PORTS
    tcp_echo_port: int = TCP_ECHO_PORT
    udp_echo_port: int = UDP_ECHO_PORT

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_in(ns: Netns, timeout: float = 10.0) -> ServerApp:
    """Start the app in `ns`; return once every HTTP port answers /health."""
    log_dir = Path(tempfile.mkdtemp(prefix="rf-lab-srv-"))
    log_path = log_dir / "server_app.log"
    log: IO[str] = log_path.open("w")
    proc = ns.spawn_python_module("tests.lab.server_app", stdout=log, stderr=subprocess.STDOUT)
    log.close()
    app = ServerApp(ns.name, proc, log_path)
    deadline = time.monotonic() + timeout
    pending = list(HTTP_PORTS)
    while pending and time.monotonic() < deadline:
        if not app.alive():
            raise RuntimeError(f"server app exited early: {app.log()[-2000:]}")
        res = ns.curl(f"http://127.0.0.1:{pending[0]}/health", max_time=1.0)
        if res.status == 200:
            pending.pop(0)
        else:
            time.sleep(0.05)
    if pending:
        raise RuntimeError(f"server app not answering on {pending} after {timeout}s: {app.log()}")
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, action="append", help="HTTP port (repeatable)")
    parser.add_argument("--tcp-echo", type=int, default=TCP_ECHO_PORT)
    parser.add_argument("--udp-echo", type=int, default=UDP_ECHO_PORT)
    args = parser.parse_args()
    serve(tuple(args.http or HTTP_PORTS), args.tcp_echo, args.udp_echo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

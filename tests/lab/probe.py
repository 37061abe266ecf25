"""Socket probes run INSIDE a namespace: `python -m tests.lab.probe < request.json`.

Reads one JSON request on stdin, prints one JSON result on stdout (see
`tests/lab/traffic.py` for the host-side API). Every socket has a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from typing import Any


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.RemoteDisconnected | http.client.NotConnected):
        return "closed"
    return f"{type(exc).__name__}: {exc}"


def udp(req: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(_family(req["addr"]), socket.SOCK_DGRAM) as sock:
        sock.settimeout(float(req["timeout"]))
        sock.sendto(bytes.fromhex(req["payload"]), (req["addr"], int(req["port"])))
        reply, _ = sock.recvfrom(65535)
    return {"ok": True, "reply": reply.hex()}


def tcp(req: dict[str, Any]) -> dict[str, Any]:
    timeout = float(req["timeout"])
    with socket.create_connection((req["addr"], int(req["port"])), timeout=timeout) as sock:
        if req.get("payload") is None:
            return {"ok": True, "reply": ""}
        payload = bytes.fromhex(req["payload"])
        sock.sendall(payload)
        reply = b""
        while len(reply) < len(payload):
            chunk = sock.recv(65535)
            if not chunk:
                break
            reply += chunk
    return {"ok": bool(reply), "reply": reply.hex()}


def raw(req: dict[str, Any]) -> dict[str, Any]:
    """Send bytes, read until the peer closes or the deadline passes."""
    timeout = float(req["timeout"])
    deadline = time.monotonic() + timeout
    reply = b""
    error = None
    with socket.create_connection((req["addr"], int(req["port"])), timeout=timeout) as sock:
        sock.sendall(bytes.fromhex(req["payload"]))
        try:
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(65535)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:
            error = _error_name(exc)
    return {"ok": bool(reply), "reply": reply.hex(), "error": error}


def keepalive(req: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(req["addr"], int(req["port"]), timeout=float(req["timeout"]))
    conn.connect()
    assert conn.sock is not None
    local_port = int(conn.sock.getsockname()[1])
    first_sock = conn.sock
    conn.auto_open = 0  # never reconnect: all requests must share this connection
    exchanges: list[dict[str, Any]] = []
    single = True
    for r in req["requests"]:
        if exchanges and exchanges[-1]["status"] is None:
            exchanges.append({"status": None, "body": "", "error": "not sent (earlier failure)"})
            continue
        try:
            headers = dict(r["headers"])
            body = r["body"].encode() if r["body"] else None
            if body is not None:
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(r["method"], r["path"], body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            single = single and conn.sock is first_sock
            exchanges.append({"status": resp.status, "body": data.decode("utf-8", "replace"),
                              "error": None})
        except (OSError, http.client.HTTPException) as exc:
            exchanges.append({"status": None, "body": "", "error": _error_name(exc)})
    conn.close()
    return {"exchanges": exchanges, "single_connection": single, "local_port": local_port}


HANDLERS = {"udp": udp, "tcp": tcp, "raw": raw, "keepalive": keepalive}


def main() -> int:
    req = json.loads(sys.stdin.read())
    started = time.monotonic()
    try:
        out = HANDLERS[req["kind"]](req)
    except (OSError, http.client.HTTPException) as exc:
        out = {"ok": False, "reply": "", "error": _error_name(exc)}
    out["elapsed"] = time.monotonic() - started
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hostnames from the first bytes of a flow: TLS ClientHello SNI and DNS query names.

Both parsers are bounded and total: any malformed input gives None.
"""

from __future__ import annotations

_TLS_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def tls_client_hello_sni(data: bytes) -> str | None:
    """The server_name of a ClientHello at the start of `data`, if complete and present."""
    try:
        if len(data) < 43 or data[0] != _TLS_HANDSHAKE or data[5] != _CLIENT_HELLO:
            return None
        end = min(len(data), 5 + _u16(data, 3))
        pos = 5 + 4 + 2 + 32  # handshake header, client_version, random
        pos += 1 + data[pos]  # session id
        pos += 2 + _u16(data, pos)  # cipher suites
        pos += 1 + data[pos]  # compression methods
        if pos + 2 > end:
            return None
        ext_end = min(end, pos + 2 + _u16(data, pos))
        pos += 2
        while pos + 4 <= ext_end:
            ext_type, ext_len = _u16(data, pos), _u16(data, pos + 2)
            pos += 4
            if ext_type == _EXT_SERVER_NAME:
                # server_name_list: u16 length, then (type u8, u16 length, name)
                if pos + 5 > ext_end or data[pos + 2] != 0:
                    return None
                name_len = _u16(data, pos + 3)
                name = data[pos + 5 : pos + 5 + name_len]
                if len(name) != name_len:
                    return None
                return name.decode("ascii", "replace").rstrip(".").lower()
            pos += ext_len
    except IndexError:
        return None
    return None


def dns_query_name(payload: bytes) -> str | None:
    """The first question's name of a DNS query message (UDP payload)."""
    if len(payload) < 17 or payload[2] & 0x80:  # too short, or a response
        return None
    if _u16(payload, 4) == 0:  # no question
        return None
    labels: list[str] = []
    pos = 12
    for _ in range(128):  # a name has at most 127 labels
        if pos >= len(payload):
            return None
        length = payload[pos]
        if length == 0:
            return ".".join(labels).lower() if labels else None
        if length & 0xC0:  # compression pointers do not occur in a query's first name
            return None
        label = payload[pos + 1 : pos + 1 + length]
        if len(label) != length:
            return None
        labels.append(label.decode("ascii", "replace"))
        pos += 1 + length
    return None

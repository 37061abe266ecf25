# Types of the C extension agent/core/_lane.c (the decision core's fast lane).
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

class Lane:
    def __init__(
        self,
        depth: int,
        max_gaps: int = 16,
        catch_up: Callable[[object, object, bytes, list[tuple[int, int, int]]], None] | None = None,
    ) -> None: ...
    def configure(
        self, path_keys: list[bytes], names: list[bytes], routes: list[tuple[list[bytes], list[int]]]
    ) -> None: ...
    def disable(self) -> None: ...
    def admit(
        self,
        packet: bytes,
        next_seq: int,
        flow: object,
        decision: object,
        active: OrderedDict[Any, Any],
        lookup: object,
        state: object,
        body_left: int = 0,
        budget: int = 0,
    ) -> bytes | None: ...
    def discard(self, key: bytes) -> None: ...
    def release(self, key: bytes) -> None: ...
    def screen(self, packet: bytes, now: float, past_depth: bool) -> object | None: ...
    def stats(self) -> dict[str, int]: ...
    def request_clean(self, payload: bytes) -> bool: ...

"""The one exception kernel adapters raise: the kernel (or a tool) refused."""

from __future__ import annotations


class KernelError(Exception):
    """A kernel tool or netlink request failed; `detail` is the tool's own message."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.detail = detail

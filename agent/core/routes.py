"""Route templates (`/api/totals/last/{num}`) matched against normalized paths.

Owns turning the enrichment's route templates into path parameters: a
`{name}` segment of a matching template yields (name, segment value). The
templates live in a segment trie, so a path costs one dict lookup per
segment however many templates there are, and nothing when there are none.
"""

from __future__ import annotations

from collections.abc import Sequence


class _Node:
    __slots__ = ("ends", "literals", "param")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        # One entry per template ending here: its position among the templates and
        # its (segment index, parameter name) pairs.
        self.ends: list[tuple[int, tuple[tuple[int, str], ...]]] = []


def _tail_value(segments: list[str], index: int) -> str:
    return "/".join(segments[index:])


def _segments(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


class RouteMatcher:
    """Matches normalized paths against route templates, segment by segment.

    Literal segments compare case-insensitively, `{name}` matches one non-empty
    segment, and a trailing slash on either side is tolerated. A template's LAST
    `{name}` also takes the rest of a longer path (`/last/1/**/union...` gives
    num = `1/**/union...`): an attacker's value may contain slashes, and what a
    permissive server would read as the parameter must not escape inspection.
    """

    __slots__ = ("_empty", "_root", "templates")

    def __init__(self, templates: Sequence[str]) -> None:
        self.templates = tuple(templates)
        self._root = _Node()
        for position, template in enumerate(self.templates):
            self._add(position, template)
        self._empty = not self.templates

    def _add(self, position: int, template: str) -> None:
        node = self._root
        captures: list[tuple[int, str]] = []
        path = template.split("?", 1)[0]
        for index, segment in enumerate(_segments(path)):
            if len(segment) > 2 and segment[0] == "{" and segment[-1] == "}":
                captures.append((index, segment[1:-1].strip().lower()))
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literals.setdefault(segment.lower(), _Node())
        node.ends.append((position, tuple(captures)))

    def __len__(self) -> int:
        return len(self.templates)

    def match(self, normalized_path: str) -> tuple[tuple[str, str], ...]:
        """(parameter name, segment value) for every template the path matches.

        In template order, each pair once.
        """
        if self._empty:
            return ()
        segments = _segments(normalized_path)
        count = len(segments)
        matched: list[tuple[int, tuple[tuple[int, str], ...], bool]] = []
        pending: list[tuple[_Node, int]] = [(self._root, 0)]
        while pending:
            node, depth = pending.pop()
            if depth == count:
                matched.extend((position, captures, False) for position, captures in node.ends)
                continue
            segment = segments[depth]
            if node.literals:
                child = node.literals.get(segment.lower())
                if child is not None:
                    pending.append((child, depth + 1))
            if node.param is not None and segment:
                pending.append((node.param, depth + 1))
                if depth + 1 < count:
                    # Templates ending with this parameter take the rest of the path.
                    matched.extend(
                        (position, captures, True)
                        for position, captures in node.param.ends
                        if captures and captures[-1][0] == depth
                    )
        if not matched:
            return ()
        matched.sort()
        found: dict[tuple[str, str], None] = {}
        for _, captures, tail in matched:
            last = len(captures) - 1
            for number, (index, name) in enumerate(captures):
                value = _tail_value(segments, index) if tail and number == last else segments[index]
                found[(name, value)] = None
        return tuple(found)

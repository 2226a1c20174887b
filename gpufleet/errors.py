"""Input problems, reported as ``file: key.path: message`` lines.

Every loader and cross-check appends :class:`Problem` objects instead of
raising on the first one, so a user sees everything wrong with a fleet in one
run. :class:`FleetError` carries them to the command line, which prints one
line each and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        # One problem, one line: a key or value with a line break must not split it.
        return f"{where}: {self.message}".replace("\r", "\\r").replace("\n", "\\n")


class FleetError(Exception):
    """The fleet description has one or more problems."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def key_path(loc: Iterable[object]) -> str:
    """Render a location tuple as ``a.b[0].c``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``""``."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[match[0]]}'?)" if match else ""

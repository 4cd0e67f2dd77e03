"""Layer windows written as "a-b" (inclusive): the one parser and the one formatter.

>>> window_layers("8-11"), window_label([8, 9, 10, 11]), window_label(None)
([8, 9, 10, 11], '8-11', None)
"""

from __future__ import annotations

from collections.abc import Sequence


class WindowError(ValueError):
    """A window spec or layer list that cannot be used."""


def window_layers(spec: str) -> list[int]:
    """``"a-b"`` -> ``[a, ..., b]``; a :class:`WindowError` naming the spec when it is not a range."""
    lo_s, sep, hi_s = str(spec).strip().partition("-")
    if not (sep and lo_s.isdigit() and hi_s.isdigit() and int(lo_s) <= int(hi_s)):
        raise WindowError(f"window {spec!r} is not 'sr', 'v1', 'v2' or an inclusive range like '8-11'")
    return list(range(int(lo_s), int(hi_s) + 1))


def window_label(layers: Sequence[int] | None) -> str | None:
    """``[8, 9, 10, 11]`` -> ``'8-11'`` (windows are contiguous inclusive ranges)."""
    if not layers:
        return None
    return f"{min(layers)}-{max(layers)}"

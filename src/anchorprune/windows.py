"""Layer windows: the "a-b" parser and formatter, the published windows, and decoder depths by kind.

The one home of which decoder layers a window spec (``sr``, ``v1``, ``v2``, ``a-b``) means; the
configuration checks explicit windows against :data:`KNOWN_DEPTH` here, evaluation and serving
resolve specs with :func:`resolve_window`.

>>> window_layers("8-11"), window_label([8, 9, 10, 11]), window_label(None)
([8, 9, 10, 11], '8-11', None)
"""

from __future__ import annotations

from collections.abc import Sequence


class WindowError(ValueError):
    """A window spec or layer list that cannot be used."""


#: decoder depth of backbone kinds whose depth does not depend on the checkpoint
KNOWN_DEPTH: dict[str, int] = {"minilm-text": 6, "mock": 8}


def window_range(spec: str) -> tuple[int, int] | None:
    """``"a-b"`` -> ``(a, b)``, or ``None`` when ``spec`` is not an inclusive range (``sr``, ``v1``, ...).

    >>> window_range("2-4"), window_range("sr"), window_range("5-3")
    ((2, 4), None, None)
    """
    lo_s, sep, hi_s = str(spec).strip().partition("-")
    if not (sep and lo_s.isdigit() and hi_s.isdigit() and int(lo_s) <= int(hi_s)):
        return None
    return int(lo_s), int(hi_s)


def window_layers(spec: str) -> list[int]:
    """``"a-b"`` -> ``[a, ..., b]``; a :class:`WindowError` naming the spec when it is not a range."""
    rng = window_range(spec)
    if rng is None:
        raise WindowError(f"window {spec!r} is not 'sr', 'v1', 'v2' or an inclusive range like '8-11'")
    return list(range(rng[0], rng[1] + 1))


def window_label(layers: Sequence[int] | None) -> str | None:
    """``[8, 9, 10, 11]`` -> ``'8-11'`` (windows are contiguous inclusive ranges)."""
    if not layers:
        return None
    return f"{min(layers)}-{max(layers)}"


# ------------------------------------------------------------------ window specs
#: published windows (docs/method.md §1), inclusive, by backbone kind: (num_layers, v1, v2)
PUBLISHED_WINDOWS: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "colpali": (18, (8, 11), (11, 14)),
    "colqwen2": (28, (11, 16), (18, 23)),
    "jina-v4": (36, (14, 21), (26, 33)),
}



#: the kinds whose checkpoints colpali-engine also serves
COLPALI_ENGINE_KINDS = ("colpali", "colqwen2")


def _published(kind: str | None, num_layers: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
    key = kind
    if kind == "colpali-engine":
        # colpali-engine serves ColPali and ColQwen2 (told apart by depth) and ColQwen2.5 (no published window)
        key = {PUBLISHED_WINDOWS[k][0]: k for k in COLPALI_ENGINE_KINDS}.get(num_layers)
    if key not in PUBLISHED_WINDOWS:
        raise WindowError(f"no published v1/v2 window for backbone kind {kind!r} with {num_layers} layers "
                          f"(published: ColPali, ColQwen2, Jina v4); use 'sr' or an explicit range like '8-11'")
    expected = PUBLISHED_WINDOWS[key][0]
    if num_layers != expected:
        raise WindowError(f"the published windows for {key!r} assume {expected} decoder layers, this backbone has "
                          f"{num_layers} (a test model?); use 'sr' or an explicit range")
    return PUBLISHED_WINDOWS[key]


def resolve_window(
    spec: str,
    num_layers: int,
    sr_window: Sequence[int] | None = None,
    kind: str | None = None,
) -> list[int]:
    """Decoder-layer indices for a window spec: ``"sr"``, ``"v1"``, ``"v2"`` or ``"a-b"`` (inclusive).

    >>> resolve_window("v2", 18, kind="colpali"), resolve_window("2-4", 6)
    ([11, 12, 13, 14], [2, 3, 4])
    >>> resolve_window("sr", 18, sr_window=[6, 7, 8, 9])
    [6, 7, 8, 9]
    """
    spec = spec.strip()
    if spec == "sr":
        if not sr_window:
            raise WindowError("window 'sr' needs the calibrated window: run `anchorprune calibrate` first")
        layers = [int(x) for x in sr_window]
    elif spec in ("v1", "v2"):
        _, v1, v2 = _published(kind, num_layers)
        lo, hi = v1 if spec == "v1" else v2
        layers = list(range(lo, hi + 1))
    else:
        layers = window_layers(spec)
    bad = [x for x in layers if not 0 <= x < num_layers]
    if bad:
        raise WindowError(f"window {spec!r} has layers {bad} outside 0..{num_layers - 1}")
    return layers

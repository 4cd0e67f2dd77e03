"""Layer windows: the "a-b" parser and formatter, the published windows, and decoder depths by kind.

The one home of which decoder layers a window spec (``sr``, ``v1``, ``v2``, ``a-b``) means; the
configuration checks explicit windows against :data:`KNOWN_DEPTH` here, evaluation and serving
resolve specs with :func:`resolve_window`.

>>> window_layers("8-11"), window_label([8, 9, 10, 11]), window_label(None)
([8, 9, 10, 11], '8-11', None)
"""

from __future__ import annotations

import math
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


# ------------------------------------------------------------------ the grid's window choices
#: how a grid window was chosen (the ``window_source`` param of each MLflow child run)
WINDOW_SOURCES = ("sr", "fixed", "sweep")
#: the published windows' width is ceil(0.2 L) for all three backbones (4 of 18, 6 of 28, 8 of 36)
PUBLISHED_RHO = 0.2


def published_relative(spec: str) -> float:
    """Mean relative start α of the published ``v1``/``v2`` window over ColPali, ColQwen2 and Jina v4.

    >>> round(published_relative("v1"), 3), round(published_relative("v2"), 3)
    (0.409, 0.659)
    """
    idx = {"v1": 1, "v2": 2}[spec]
    return sum(w[idx][0] / w[0] for w in PUBLISHED_WINDOWS.values()) / len(PUBLISHED_WINDOWS)


def scaled_published(spec: str, num_layers: int) -> list[int]:
    """``v1``/``v2`` for a backbone without a published window: the published mean relative start α,
    scaled to ``num_layers``, with the published width ceil(0.2 L).

    >>> scaled_published("v1", 6), scaled_published("v2", 6), scaled_published("v2", 8)
    ([2, 3], [4, 5], [5, 6])
    """
    width = max(1, math.ceil(PUBLISHED_RHO * num_layers - 1e-9))
    start = min(max(0, round(published_relative(spec) * num_layers)), max(0, num_layers - width))
    return list(range(start, min(num_layers, start + width)))


def sweep_windows(num_layers: int, width: int, stride: int = 1) -> list[list[int]]:
    """Sliding windows of ``width`` layers across the depth, starts 0, stride, ... (the last one ends at L-1).

    >>> sweep_windows(6, 2), sweep_windows(6, 2, stride=2), sweep_windows(5, 2, stride=2)
    ([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]], [[0, 1], [2, 3], [4, 5]], [[0, 1], [2, 3], [3, 4]])
    """
    if width < 1 or stride < 1:
        raise WindowError(f"a sweep needs width >= 1 and stride >= 1 (got {width}, {stride})")
    width = min(width, num_layers)
    starts = list(range(0, num_layers - width + 1, stride))
    if starts[-1] != num_layers - width:
        starts.append(num_layers - width)     # the deepest window is always in the sweep
    return [list(range(s, s + width)) for s in starts]


def window_source(spec: str | None) -> str | None:
    """``sr`` -> ``sr``; ``v1``, ``v2`` and explicit ranges -> ``fixed``; ``sweep:a-b`` -> ``sweep``."""
    if spec is None:
        return None
    if spec == "sr":
        return "sr"
    return "sweep" if spec.startswith("sweep") else "fixed"


def grid_windows(specs: Sequence[str], num_layers: int, sr_window: Sequence[int] | None, kind: str | None,
                 stride: int = 1) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The grid's windows, ``{spec: layers}`` in order, and a note for every window that is not what it says.

    ``sweep`` expands to ``sweep:a-b`` sliding windows of the SR window's width (``stride`` layers apart);
    ``v1``/``v2`` on a backbone without a published window are scaled (:func:`scaled_published`) and noted.
    A spec that cannot be resolved raises :class:`WindowError`.
    """
    out: dict[str, list[int]] = {}
    notes: dict[str, str] = {}
    for spec in specs:
        if spec == "sweep":
            width = len(sr_window) if sr_window else max(1, math.ceil(PUBLISHED_RHO * num_layers - 1e-9))
            for layers in sweep_windows(num_layers, width, stride):
                out[f"sweep:{window_label(layers)}"] = layers
            continue
        if spec in ("v1", "v2"):
            try:
                out[spec] = resolve_window(spec, num_layers, sr_window=sr_window, kind=kind)
            except WindowError:
                out[spec] = scaled_published(spec, num_layers)
                notes[spec] = (f"{spec} has no published window for {kind!r} ({num_layers} layers): the published "
                               f"mean relative start {published_relative(spec):.3f} scaled to {num_layers} layers, "
                               f"width ceil({PUBLISHED_RHO} L) -> {window_label(out[spec])}")
            continue
        out[spec] = resolve_window(spec, num_layers, sr_window=sr_window, kind=kind)
    return out, notes

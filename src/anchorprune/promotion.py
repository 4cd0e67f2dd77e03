"""The promotion rule (ARCHITECTURE, "Promotion rule"), as a pure function.

Among evaluated pruning configs of one backbone, the champion is the config with
the **fewest stored vectors per page** whose macro nDCG@5 retention is at least
``min_retention`` and (if required) beats random selection at the same γ; ties
go to higher retention, then to the name. The unpruned "full" index is the
reference, never a candidate, and random itself cannot beat random. A
challenger replaces the current champion only if it ranks strictly better by
the same ordering.

>>> a = Candidate("bb", "sap", 0.1, "2-3", retention=0.95, vectors_per_page=3.0, random_retention=0.6)
>>> b = Candidate("bb", "sap", 0.05, "2-3", retention=0.85, vectors_per_page=1.0, random_retention=0.5)
>>> d = choose_champion([a, b], min_retention=0.9)
>>> d.champion.name, d.promoted
('sap@0.1[2-3]', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Candidate:
    backbone: str
    method: str
    gamma: float
    window: str | None               # "a-b" for SAP, None for window-free methods
    retention: float                 # macro nDCG@5 retention vs full
    vectors_per_page: float          # mean stored vectors per page
    random_retention: float | None   # random's retention at the same gamma (None if not evaluated)
    run_id: str | None = None

    @property
    def name(self) -> str:
        w = f"[{self.window}]" if self.window else ""
        return f"{self.method}@{self.gamma:g}{w}"

    def sort_key(self) -> tuple[float, float, str]:
        """Smaller is better: fewer vectors, then higher retention, then name."""
        return (self.vectors_per_page, -self.retention, self.name)

    def to_tags(self) -> dict[str, str]:
        return {f"anchorprune.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Candidate:
        def get(key: str) -> str:
            return tags.get(f"anchorprune.{key}", "")

        rr = get("random_retention")
        return cls(
            backbone=get("backbone"),
            method=get("method"),
            gamma=float(get("gamma")),
            window=get("window") or None,
            retention=float(get("retention")),
            vectors_per_page=float(get("vectors_per_page")),
            random_retention=float(rr) if rr else None,
            run_id=get("run_id") or None,
        )


@dataclass
class Decision:
    champion: Candidate | None       # the config that holds the alias after this decision
    promoted: bool                   # whether the alias should move to ``champion``
    reason: str
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (candidate name, why)


def gate(c: Candidate, min_retention: float, require_beats_random: bool) -> str | None:
    """Why ``c`` fails the gate, or ``None`` if it passes."""
    if c.method == "full":
        return "full is the reference, not a pruning config"
    if c.retention < min_retention:
        return f"retention {c.retention:.4f} < {min_retention:.4f}"
    if require_beats_random:
        if c.method == "random":
            return "random cannot beat random"
        if c.random_retention is None:
            return f"no random baseline at gamma {c.gamma:g} to compare with"
        if c.retention <= c.random_retention:
            return f"retention {c.retention:.4f} does not beat random ({c.random_retention:.4f})"
    return None


def choose_champion(
    candidates: Sequence[Candidate],
    min_retention: float,
    require_beats_random: bool = True,
    current: Candidate | None = None,
) -> Decision:
    """Apply the rule; ``current`` is the config holding the alias now (if any)."""
    rejected: list[tuple[str, str]] = []
    passing: list[Candidate] = []
    for c in candidates:
        why = gate(c, min_retention, require_beats_random)
        if why is None:
            passing.append(c)
        else:
            rejected.append((c.name, why))
    if not passing:
        keep = f"; '{current.name}' stays champion" if current else "; there is no champion"
        return Decision(current, False, f"no candidate passes the gate{keep}", rejected)
    best = min(passing, key=Candidate.sort_key)
    if current is None:
        return Decision(best, True, f"'{best.name}' is the first champion: {_describe(best)}", rejected)
    if best.sort_key() < current.sort_key():
        return Decision(
            best, True, f"'{best.name}' ({_describe(best)}) beats current '{current.name}' ({_describe(current)})",
            rejected,
        )
    return Decision(
        current, False,
        f"best candidate '{best.name}' ({_describe(best)}) does not beat current '{current.name}' "
        f"({_describe(current)}); the alias stays",
        rejected,
    )


def _describe(c: Candidate) -> str:
    return f"{c.vectors_per_page:.1f} vectors/page, retention {c.retention:.4f}"

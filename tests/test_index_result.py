"""The index stage's typed result: its one-line headline and the flat record written to reports/index.json."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from anchorprune.stages.index import IndexBuildResult

BUILT = dict(index="demo", backend="local", version=4, pages=291, vectors=19_000, bytes=4_900_000,
             reencoded_pages=3, reused_pages=288, rebuilt=True, reason="built from champion m v2 and data abc",
             meta={"model": "anchorprune-m", "model_version": "2", "data_version": "abc", "version": "stale",
                   "git_commit": "0123abc"})


def test_record_is_flat_and_the_result_fields_win_over_the_build_record():
    rec = IndexBuildResult(**BUILT).record()
    assert rec["model"] == "anchorprune-m" and rec["data_version"] == "abc"    # the build record, flattened
    assert rec["version"] == 4 and rec["rebuilt"] is True and "meta" not in rec
    assert "git_commit" not in rec                    # provenance, not a result: dvc.lock must not follow commits


def test_headlines():
    assert IndexBuildResult(**BUILT).headline() == (
        "index demo (local) now serves v4: 291 pages, 19000 vectors, 4.9 MB; re-encoded 3, reused 288")
    same = IndexBuildResult(**{**BUILT, "rebuilt": False, "reason": "nothing changed"})
    assert same.headline(hint="--force rebuilds") == (
        "index demo (local) unchanged: still serves v4 (nothing changed; --force rebuilds)")


def test_result_is_frozen_and_strict():
    r = IndexBuildResult(**BUILT)
    with pytest.raises(ValidationError):
        r.version = 5
    with pytest.raises(ValidationError, match="extra"):
        IndexBuildResult(**BUILT, extra_field=1)

"""What the ViDoRe loader gives on the hub look-alike fixtures, under each option.

Builds the fixtures of ``tests/data/vidore_fixtures.py`` (the four v2 sets, docvqa, tabfquad,
shiftproject and tatdqa_test_beir at their real sizes with 16x16 images; a scaled-down v3 set)
in a temporary folder, prints pages / queries / qrels per set for all languages and English,
then builds the four v2 sets under both protocols and times each build. The expected counts
(`docs/vidore.md`) are asserted in ``tests/data/test_vidore.py``.

    .venv/bin/python benchmarks/vidore_fixture_counts.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "data"))


def main() -> None:
    import datasets
    import vidore_fixtures as F

    from anchorprune.data.vidore import build_vidore_dataset
    from anchorprune.data.vidore_read import read_source

    datasets.disable_progress_bars()
    root = Path(tempfile.mkdtemp(prefix="vidore-fixtures-"))
    v2 = {k: str(v) for k, v in F.save_v2_sets(root).items()}
    others = {
        "docvqa_test_subsampled": str(F.save_v1_qa(root, "docvqa_test_subsampled", F.docvqa_rows())),
        "tabfquad_test_subsampled": str(F.save_v1_qa(root, "tabfquad_test_subsampled", F.tabfquad_rows())),
        "shiftproject_test": str(F.save_v1_qa(root, "shiftproject_test", F.shift_rows(),
                                              pixel_dups=F.SHIFT_PIXEL_DUPS)),
        "tatdqa_test_beir": str(F.save_tatdqa_beir(root)),
        "vidore_v3_pharmaceuticals (scaled)": str(F.save_v3(root)),
    }
    print("| fixture | languages | pages | queries | qrels |\n|---|---|---|---|---|")
    for name, src in {**v2, **others}.items():
        for langs in (None, ("english",)):
            d = read_source(src, languages=langs)
            print(f"| {name} | {'all' if langs is None else 'english'} | {len(d.pages)} | {len(d.queries)} | "
                  f"{sum(len(r) for r in d.qrels.values())} |")
    print("\n| the four v2 sets | protocol | languages | pages | queries | qrels | seconds |\n|---|---|---|---|---|---|---|")
    for protocol in ("per_dataset", "union"):
        for langs in ("all", ["english"]):
            t = time.perf_counter()
            m = build_vidore_dataset(list(v2.values()), root / f"out-{protocol}-{len(langs)}", name="x",
                                     protocol=protocol, languages=langs)
            c = m["counts"]
            print(f"| ESG+bio+econ+HL | {protocol} | {langs if langs == 'all' else 'english'} | {c['pages']} | "
                  f"{c['queries']} | {c['qrels']} | {time.perf_counter() - t:.1f} |")


if __name__ == "__main__":
    main()

"""What a backbone reads from a page, and a one-line refusal, before any encode, when the dataset lacks it.

>>> backbone_reads("minilm-text"), backbone_reads("colqwen2"), backbone_reads("mock")
('text', 'image', None)
"""

from __future__ import annotations

from pathlib import Path

from anchorprune.data.schema import DatasetError

#: backbone kind -> what it reads from each page (None: either; the mock backbone reads what there is)
READS = {"minilm-text": "text", "colpali": "image", "colqwen2": "image", "colpali-engine": "image",
         "jina-v4": "image", "mock": None}


class DatasetInputError(DatasetError):
    """The dataset has nothing the backbone can read (text for a text backbone, images for a vision one)."""


def backbone_reads(kind: str) -> str | None:
    return READS.get(kind)


def input_counts(dataset_dir: str | Path) -> dict[str, int]:
    """Pages in all, with a non-empty text layer, and with an image (read from the corpus table only)."""
    from anchorprune.data.schema import read_tables

    corpus = read_tables(dataset_dir)[0]
    text = corpus["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))
    image = corpus["image_path"].map(lambda p: isinstance(p, str) and bool(p))
    return {"pages": len(corpus), "text": int(text.sum()), "image": int(image.sum())}


def check_backbone_inputs(dataset_dir: str | Path, backbone_name: str, kind: str) -> dict[str, int]:
    """Raise :class:`DatasetInputError` (one line) when no page has what backbone ``kind`` reads."""
    reads = backbone_reads(kind)
    counts = input_counts(dataset_dir)
    if reads is None or counts["pages"] == 0 or counts[reads] > 0:
        return counts
    name = Path(dataset_dir).name
    if reads == "text":
        raise DatasetInputError(
            f"backbone {backbone_name!r} ({kind}) reads each page's text layer, but dataset {name!r} has text on "
            f"0 of {counts['pages']} pages (image-only: scanned PDFs or an image dataset); use a vision backbone "
            "(colpali, colqwen2, jina-v4) or a dataset with a text layer")
    raise DatasetInputError(
        f"backbone {backbone_name!r} ({kind}) reads page images, but dataset {name!r} has an image on 0 of "
        f"{counts['pages']} pages; use a text backbone (minilm-text) or rebuild the dataset with its images")

"""Page features: the one forward pass per page, cached and shared by every method, window and ratio.

``record`` (PageFeatures), ``cache`` (the on-disk cache), ``claims`` (who is encoding which page),
``storage`` (local paths or fsspec URLs) and ``encoding`` (running the backbone through the cache).
"""

from anchorprune.features.record import PageFeatures

__all__ = ["PageFeatures"]

"""anchorprune: Structural Anchor Pruning for multi-vector visual document retrieval."""

__version__ = "0.1.0"

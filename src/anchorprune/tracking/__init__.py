"""Tracking: MLflow runs, figures, reports, run summaries, DVC outputs and stage provenance."""

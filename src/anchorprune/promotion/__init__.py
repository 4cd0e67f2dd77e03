"""Promotion: the certified rule (pure functions) and the MLflow registry it moves the ``champion`` alias in."""

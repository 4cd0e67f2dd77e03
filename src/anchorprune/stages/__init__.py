"""The pipeline's stages as plain functions, one module each, in pipeline order.

workspace -> data -> encode -> calibrate -> evaluate -> promote -> index -> search.
The CLI (and so ``dvc repro``) and the Prefect flows call these; each reads its inputs from disk,
writes its outputs atomically under ``reports/`` and logs to MLflow.
"""

"""Running the stages with Prefect: flows loaded by entrypoint, deployments and their pull step, the per-index
concurrency limit, the process environment, the stage cache key (provenance) and the run summaries.

``flows/`` (at the repository root) only wires tasks; whatever it decides or computes lives here.
"""

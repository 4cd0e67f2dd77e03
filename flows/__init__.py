"""Prefect flows: they only wire tasks around ``anchorprune.stages``; the logic lives in the library.

Not installed with the package: the CLI and the deployments load them by entrypoint
(``flows/pipeline.py:pipeline_flow``) from the project checkout (``anchorprune.orchestration.entrypoints``).
"""

"""Prefect flows: they only wire tasks around ``anchorprune.stages``; the logic lives in the library."""

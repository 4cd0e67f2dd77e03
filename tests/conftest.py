"""Test environment, set in one place: offline hub, telemetry off, Prefect home in a temp dir."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="anchorprune-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

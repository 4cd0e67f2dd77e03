"""Loading real checkpoints by HF id + revision, failing at once (and clearly) when they cannot be had."""

from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelUnavailableError(RuntimeError):
    """A checkpoint is neither cached nor reachable."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_pretrained(loader, model_id: str, revision: str, **kwargs):
    """``loader.from_pretrained(model_id, revision=...)`` with an error naming the model and the reason."""
    try:
        return loader.from_pretrained(model_id, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline()
               else "the hub is unreachable from here or the id/revision does not exist")
        raise ModelUnavailableError(
            f"cannot load {model_id!r} (revision {revision!r}) with {getattr(loader, '__name__', loader)}: {why}. "
            f"Download it where the hub is reachable (huggingface-cli download {model_id} --revision {revision}) "
            f"or use a local path. Cause: {str(exc).splitlines()[0][:200]}"
        ) from exc

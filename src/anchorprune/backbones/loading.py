"""Loading real checkpoints by HF id + revision, failing at once (and clearly) when they cannot be had."""

from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelUnavailableError(RuntimeError):
    """A checkpoint is neither cached nor reachable."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_revision(model_id: str, revision: str) -> str:
    """The commit hash a hub ``revision`` (``main``, a tag) resolves to, from the file loading just fetched.

    transformers 5.24 keeps no ``_commit_hash`` on the loaded config, so the hash is read from the
    snapshot path of ``config.json`` (``<cache>/models--org--name/snapshots/<hash>/config.json``). A local
    folder or a revision that already is a 40-hex hash is returned unchanged.
    """
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()):
        return revision
    if os.path.isdir(model_id):
        return revision
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        path = cached_file(model_id, "config.json", revision=revision)
    except OSError:
        return revision
    return extract_commit_hash(path, None) or revision


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

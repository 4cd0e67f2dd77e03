"""What a stage's result depends on, as one hash: the key of the Prefect task cache.

A cached result may be reused only if nothing that changes it has changed: the
task inputs (Prefect hashes those itself), the configuration, the **content** of
the dataset (not the DVC pointer, which can lag behind an edit), the code (every
``.py`` file of the ``anchorprune`` package and of the project root's ``flows/``,
the flows the runs load by entrypoint), the package version and the git commit.
:func:`stage_key` returns that hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import anchorprune
from anchorprune.ioutil import tree_hash

#: folders whose Python source is the "library code" a result depends on; :func:`code_dirs` adds the flows
CODE_DIRS: tuple[Path, ...] = (Path(anchorprune.__file__).parent,)


def code_dirs(root: str | Path) -> tuple[Path, ...]:
    """:data:`CODE_DIRS` and the flows of the checkout at ``root`` (``stages.entrypoints``: where they load from)."""
    from anchorprune.orchestration.entrypoints import flows_dir

    return (*CODE_DIRS, flows_dir(root))


def code_fingerprint(dirs: Iterable[Path] | None = None) -> str:
    """Hash of the library's Python source and the package version."""
    h = hashlib.sha256(anchorprune.__version__.encode())
    for d in dirs if dirs is not None else CODE_DIRS:
        h.update(tree_hash(d, "**/*.py").encode())
    return h.hexdigest()


def stage_key(params: str | Path, root: str | Path) -> str:
    """The provenance part of a stage's cache key: config, data content, code, version, git commit."""
    from anchorprune.stages.workspace import Workspace
    from anchorprune.tracking.tracker import git_commit

    ws = Workspace.from_params(params, root)
    parts = [
        "config=" + ws.settings.config_hash(),
        "data=" + tree_hash(ws.dataset_dir),
        "code=" + code_fingerprint(code_dirs(ws.root)),
        "git=" + git_commit(ws.root),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()

"""Upstream material the sandbox is held to: Argo CD's CRDs (manifests/crds/, 3.6 line) and
the seed's three ApplicationSets, exactly as in the project's shared/ folder.

`shared/` beside the repository is read when it is there; a clone on its own falls back to
the copies in this folder, which tests/sandbox/test_reference.py keeps byte-identical."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared"


def reference_path(shared_relative: str, local_relative: str) -> Path:
    """`shared/<shared_relative>` when it exists, else the copy `sandbox/reference/<local>`."""
    shared = SHARED / shared_relative
    return shared if shared.exists() else HERE / local_relative

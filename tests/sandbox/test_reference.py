"""The sandbox's copies of the upstream material are the shared originals, byte for byte."""

from __future__ import annotations

import pytest

from sandbox.reference import HERE, SHARED

PAIRS = [
    ("seed/applicationsets.yaml", "applicationsets.yaml"),
    ("reference/argocd-crds/application-crd.yaml", "argocd-crds/application-crd.yaml"),
    ("reference/argocd-crds/applicationset-crd.yaml", "argocd-crds/applicationset-crd.yaml"),
    ("reference/argocd-crds/appproject-crd.yaml", "argocd-crds/appproject-crd.yaml"),
]


@pytest.mark.parametrize(("shared", "copy"), PAIRS)
def test_the_copy_is_the_shared_original(shared: str, copy: str) -> None:
    original = SHARED / shared
    if not original.exists():
        pytest.skip(f"{original} is not beside this clone")
    assert (HERE / copy).read_bytes() == original.read_bytes()

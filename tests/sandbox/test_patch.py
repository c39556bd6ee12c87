from __future__ import annotations

import copy

import pytest

from sandbox.patch import PatchError, json_patch, merge_patch, strategic_merge_patch

APP = {
    "metadata": {"name": "app", "annotations": {"a": "1", "b": "2"}},
    "spec": {"source": {"helm": {"parameters": [{"name": "x", "value": "1"}]}}},
}


# --- RFC 7386 --------------------------------------------------------------------------------


def test_merge_patch_merges_objects_and_null_deletes():
    patched = merge_patch(APP, {"metadata": {"annotations": {"a": None, "c": "3"}}})
    assert patched["metadata"]["annotations"] == {"b": "2", "c": "3"}
    assert patched["spec"] == APP["spec"]


def test_merge_patch_replaces_lists_and_scalars():
    patched = merge_patch(APP, {"spec": {"source": {"helm": {"parameters": []}}}})
    assert patched["spec"]["source"]["helm"]["parameters"] == []
    assert merge_patch({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert merge_patch({"a": 1}, {"a": {"b": None, "c": 2}}) == {"a": {"c": 2}}


def test_merge_patch_rfc_7386_examples():
    # Appendix A of the RFC.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch(["a", "b"], {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "foo"}, None) is None
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


def test_no_patch_function_mutates_its_inputs():
    target = copy.deepcopy(APP)
    patch = {"metadata": {"annotations": {"a": None}}}
    patch_copy = copy.deepcopy(patch)
    merge_patch(target, patch)
    strategic_merge_patch(target, patch)
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]
    result = json_patch(target, ops)
    result["metadata"]["labels"]["x"] = "changed"
    assert target == APP
    assert patch == patch_copy
    assert ops[0]["value"] == {"x": "y"}


# --- RFC 6902 --------------------------------------------------------------------------------


def test_json_patch_operations():
    doc = {"a": {"b": [1, 2, 3]}, "c": "d"}
    patched = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "replace", "path": "/c", "value": "e"},
            {"op": "copy", "from": "/c", "path": "/f"},
            {"op": "move", "from": "/a/b", "path": "/g"},
            {"op": "test", "path": "/g", "value": [9, 2, 3, 4]},
        ],
    )
    assert patched == {"a": {}, "c": "e", "f": "e", "g": [9, 2, 3, 4]}


def test_json_patch_unescapes_pointer_tokens():
    doc = {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard", "a~b": 1}}}
    patched = json_patch(
        doc,
        [
            {"op": "remove", "path": "/metadata/annotations/argocd.argoproj.io~1refresh"},
            {"op": "replace", "path": "/metadata/annotations/a~0b", "value": 2},
        ],
    )
    assert patched == {"metadata": {"annotations": {"a~b": 2}}}


def test_json_patch_replaces_the_whole_document():
    assert json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert json_patch({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}


def test_a_failed_test_fails_the_whole_patch():
    ops = [
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "test", "path": "/a", "value": 1},
    ]
    with pytest.raises(PatchError, match="testing value /a failed"):
        json_patch({"a": 1}, ops)


def test_json_patch_test_does_not_confuse_true_and_one():
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])
    assert json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]) == {"a": 1}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/missing", "value": 1},
        {"op": "add", "path": "/missing/child", "value": 1},
        {"op": "add", "path": "/list/5", "value": 1},
        {"op": "add", "path": "/list/01", "value": 1},
        {"op": "remove", "path": "/list/-"},
        {"op": "move", "from": "/list", "path": "/list/0"},
        {"op": "copy", "from": "/nothing", "path": "/x"},
        {"op": "add", "path": "no-slash", "value": 1},
        {"op": "test", "path": "/missing", "value": 1},
        {"op": "frobnicate", "path": "/list"},
        {"op": "add", "path": "/list/0"},
    ],
)
def test_json_patch_rejects_bad_operations(op):
    with pytest.raises(PatchError):
        json_patch({"list": [1, 2]}, [op])


# --- strategic merge -------------------------------------------------------------------------

DEPLOYMENT = {
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "sidecar", "image": "proxy:1"},
                ],
                "args": ["--one"],
            }
        },
    }
}


def test_strategic_merge_merges_named_lists_by_name():
    patched = strategic_merge_patch(
        DEPLOYMENT,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "web:2", "env": [{"name": "B", "value": "3"}]},
                            {"name": "new", "image": "new:1"},
                        ]
                    }
                }
            }
        },
    )
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar", "new"]
    assert containers[0]["image"] == "web:2"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert containers[1] == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_merge_deletes_with_directives():
    patched = strategic_merge_patch(
        DEPLOYMENT,
        {
            "spec": {
                "replicas": None,
                "template": {
                    "spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]},
                },
            }
        },
    )
    assert "replicas" not in patched["spec"]
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["web"]
    patched = strategic_merge_patch(DEPLOYMENT, {"spec": {"template": {"$patch": "delete"}}})
    assert patched == {"spec": {"replicas": 1}}


def test_strategic_merge_replace_and_retain_keys():
    patched = strategic_merge_patch({"a": {"x": 1, "y": 2}}, {"a": {"$patch": "replace", "z": 3}})
    assert patched == {"a": {"z": 3}}
    patched = strategic_merge_patch(
        {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
        {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
    )
    assert patched == {"strategy": {"type": "Recreate"}}


def test_strategic_merge_replaces_primitive_lists_and_drops_other_directives():
    patched = strategic_merge_patch(
        DEPLOYMENT,
        {
            "$setElementOrder/containers": [{"name": "web"}],
            "spec": {"template": {"spec": {"args": ["--two"]}}},
        },
    )
    assert patched["spec"]["template"]["spec"]["args"] == ["--two"]
    assert not any(key.startswith("$") for key in patched)


def test_strategic_merge_is_a_merge_patch_for_plain_objects():
    secret = {"metadata": {"labels": {"a": "1"}}, "data": {"k": "dg=="}}
    patch = {"metadata": {"labels": {"a": None, "b": "2"}}, "data": {"k2": "dw=="}}
    assert strategic_merge_patch(secret, patch) == merge_patch(secret, patch)

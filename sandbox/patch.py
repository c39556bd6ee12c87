"""The three patch types the Kubernetes API server accepts on PATCH.

- `application/merge-patch+json`: RFC 7386 (`merge_patch`).
- `application/json-patch+json`: RFC 6902 (`json_patch`), as evanphx/json-patch applies it.
- `application/strategic-merge-patch+json`: apimachinery `strategicpatch`, reduced to what the
  built-in objects here need (`strategic_merge_patch`). The API server refuses this type for
  custom resources; that check belongs to the caller.

No function mutates its inputs.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied; the API server answers such a request with an error."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else
    (arrays included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 --------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    """RFC 6901 reference tokens of a JSON pointer, with `~1` and `~0` unescaped."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must be empty or start with a '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(part: str, size: int, path: str, allow_end: bool) -> int:
    if allow_end and part == "-":
        return size
    if not part.isdigit() or (part != "0" and part.startswith("0")):
        raise PatchError(f"invalid array index {part!r} in path {path!r}")
    index = int(part)
    if index > size or (index == size and not allow_end):
        raise PatchError(f"array index {index} out of bounds in path {path!r}")
    return index


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    """The container holding the last token of `path`, and that token."""
    tokens = _pointer(path)
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"path {path!r} does not exist: missing key {token!r}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(token, len(current), path, allow_end=False)]
        else:
            raise PatchError(f"path {path!r} does not exist: {token!r} is inside a scalar")
    return current, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    if path == "":
        return doc
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"path {path!r} does not exist: missing key {token!r}")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(token, len(parent), path, allow_end=False)]
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(token, len(parent), path, allow_end=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}: parent is not an object or array")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    if path == "":
        raise PatchError("cannot remove the whole document")
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"cannot remove {path!r}: missing key {token!r}")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(token, len(parent), path, allow_end=False))
    raise PatchError(f"cannot remove {path!r}: parent is not an object or array")


def _replace(doc: Any, path: str, value: Any) -> Any:
    _get(doc, path)  # the target must exist
    if path == "":
        return value
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        parent[token] = value
    else:
        parent[_index(token, len(parent), path, allow_end=False)] = value
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's `==`, `true` is not `1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy and test, applied in order.

    The whole patch fails (`PatchError`) if any operation does.
    """
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be an array of operations")
    doc = copy.deepcopy(target)
    for number, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {number} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if not isinstance(path, str):
            raise PatchError(f"operation {number}: 'path' must be a string")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {number} ({kind}) needs a 'value'")
        if kind in ("move", "copy") and not isinstance(op.get("from"), str):
            raise PatchError(f"operation {number} ({kind}) needs a 'from'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc = _replace(doc, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            source = op["from"]
            if path != source and path.startswith(source + "/"):
                raise PatchError(f"cannot move {source!r} into its own child {path!r}")
            if source == "":
                raise PatchError("cannot move the whole document")
            doc, value = _remove(doc, source)
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            try:
                actual = _get(doc, path)
            except PatchError:
                raise PatchError(f"testing value {path} failed: path does not exist") from None
            if not _json_equal(actual, op["value"]):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"unexpected operation {kind!r}")
    return doc


# --- strategic merge -------------------------------------------------------------------------

_MERGE_KEY = "name"


def _is_named_list(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and _MERGE_KEY in i for i in items)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_named_lists(target: list[Any], patch: list[Any]) -> list[Any]:
    result = [copy.deepcopy(item) for item in target]
    for item in patch:
        name = item[_MERGE_KEY]
        position = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(_MERGE_KEY) == name
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_strip_directives(item))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch with `name` as the merge key of every list of objects.

    Like a merge patch, except that lists whose items all have a `name` (containers, env, ports,
    volumes) merge item by item, and the directives `$patch: delete` (drop this map or list
    item), `$patch: replace` (replace instead of merge) and `$retainKeys` (drop other keys) are
    honoured. Other `$` directives (`$setElementOrder/...`, `$deleteFromPrimitiveList/...`) are
    dropped.
    """
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and _is_named_list(value):
            old = result.get(key)
            old_list = old if isinstance(old, list) else []
            result[key] = _merge_named_lists(old_list, value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result

"""What the Kubernetes API server checks before it stores an object.

- DNS-1123 names: `IsDNS1123Label` / `IsDNS1123Subdomain` from apimachinery
  `pkg/util/validation/validation.go`, with its exact messages.
- Custom resources: the structural-schema validation and pruning that apiextensions-apiserver
  runs against a CRD's `openAPIV3Schema` (kube-openapi `validate`, converted to field errors by
  `kubeOpenAPIResultToFieldErrors`; `structuralpruning.Prune`;
  `structuraldefaulting.PruneNonNullableNullsWithoutDefaults`).

The API server first prunes unknown fields (warning about each), then drops `null`s of
non-nullable fields, then validates. `SchemaValidator.validate` reports the warnings and the
errors of that whole sequence on the object as received; `SchemaValidator.prune` returns the
object the server would store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from environments.argo_templates import go_quote

DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN = DNS1123_LABEL + "(\\." + DNS1123_LABEL + ")*"
DNS1123_SUBDOMAIN_MAX_LENGTH = 253

_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_LABEL_RE = re.compile(DNS1123_LABEL)
_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN)


def regex_error(msg: str, regex: str, *examples: str) -> str:
    """apimachinery `RegexError`, including its odd "',  or '" joining of examples."""
    if not examples:
        return f"{msg} (regex used for validation is '{regex}')"
    msg += " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            msg += " or "
        msg += f"'{example}', "
    return msg + f"regex used for validation is '{regex}')"


def max_len_error(length: int) -> str:
    """apimachinery `MaxLenError`."""
    return f"must be no more than {length} characters"


def label_errors(value: str) -> list[str]:
    """apimachinery `IsDNS1123Label`: an empty list when `value` is a valid DNS label."""
    errors = []
    if len(value) > DNS1123_LABEL_MAX_LENGTH:
        errors.append(max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _LABEL_RE.fullmatch(value):
        errors.append(regex_error(_LABEL_MSG, DNS1123_LABEL, "my-name", "123-abc"))
    return errors


def subdomain_errors(value: str) -> list[str]:
    """apimachinery `IsDNS1123Subdomain`: an empty list when `value` is a valid DNS subdomain."""
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _SUBDOMAIN_RE.fullmatch(value):
        errors.append(regex_error(_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN, "example.com"))
    return errors


@dataclass(frozen=True)
class Cause:
    """One `StatusCause` of a 422 Invalid response: field path, reason and `ErrorBody()`."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _show(value: Any) -> str:
    """How apimachinery's `field.Error.ErrorBody` prints a bad value."""
    if isinstance(value, str):
        return go_quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def json_type(value: Any) -> str:
    """The JSON type name kube-openapi reports for a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, wanted: str) -> bool:
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if wanted == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if wanted == "number":
        return isinstance(value, int | float)
    return True


class _Node:
    """One precompiled schema node; built once per CRD version so validation only walks data."""

    __slots__ = (
        "additional",
        "enum",
        "int_or_string",
        "items",
        "max_length",
        "min_length",
        "nullable",
        "pattern",
        "preserve_unknown",
        "properties",
        "required",
        "type",
    )

    def __init__(self, schema: dict[str, Any]) -> None:
        self.type: str | None = schema.get("type")
        self.int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
        self.nullable = bool(schema.get("nullable"))
        self.preserve_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        self.required: tuple[str, ...] = tuple(schema.get("required") or ())
        self.enum: list[Any] | None = schema.get("enum")
        pattern = schema.get("pattern")
        self.pattern: re.Pattern[str] | None = re.compile(pattern) if pattern else None
        self.min_length: int | None = schema.get("minLength")
        self.max_length: int | None = schema.get("maxLength")
        props = schema.get("properties")
        self.properties: dict[str, _Node] | None = (
            {name: _Node(sub) for name, sub in props.items()} if props is not None else None
        )
        items = schema.get("items")
        self.items: _Node | None = _Node(items) if isinstance(items, dict) else None
        additional = schema.get("additionalProperties")
        self.additional: _Node | bool | None = (
            _Node(additional) if isinstance(additional, dict) else additional
        )

    def type_label(self) -> str:
        return "integer,string" if self.int_or_string else str(self.type)

    def type_ok(self, value: Any) -> bool:
        if self.int_or_string:
            return _has_type(value, "integer") or isinstance(value, str)
        return self.type is None or _has_type(value, self.type)

    def keeps_unknown_fields(self) -> bool:
        return self.preserve_unknown or self.additional is True


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class SchemaValidator:
    """Validates and prunes objects against one CRD version's `openAPIV3Schema`.

    Reproduces the structural-schema subset the Argo CD CRDs use: type, properties, required,
    items, enum, additionalProperties, nullable, pattern, minLength, maxLength,
    x-kubernetes-int-or-string and x-kubernetes-preserve-unknown-fields. `format` is not checked
    (int32/int64 accept any integer) and list/map types and `anyOf` are not interpreted.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = _Node(schema)

    def validate(self, obj: dict[str, Any]) -> tuple[list[Cause], list[str]]:
        """Causes of a 422 and `unknown field "..."` warnings, as the API server would give."""
        causes: list[Cause] = []
        warnings: list[str] = []
        self._object(obj, self.root, "", causes, warnings, at_root=True)
        return causes, warnings

    def prune(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A new object without unknown fields and without `null`s in non-nullable fields.

        `apiVersion`, `kind` and `metadata` at the root are kept untouched, as the API server
        handles them itself.
        """
        pruned = {}
        for key, value in obj.items():
            if key in ("apiVersion", "kind", "metadata"):
                pruned[key] = _clone(value)
                continue
            node = self._child(self.root, key)
            if node is None:
                continue
            if value is None and not node.nullable:
                continue
            pruned[key] = _prune(value, node)
        return pruned

    @staticmethod
    def _child(node: _Node, key: str) -> _Node | None:
        if node.properties is not None and key in node.properties:
            return node.properties[key]
        if isinstance(node.additional, _Node):
            return node.additional
        return None

    def _value(
        self, value: Any, node: _Node, path: str, causes: list[Cause], warnings: list[str]
    ) -> None:
        if value is None:
            if not node.nullable:
                self._type_error(value, node, path, causes)
            return
        if not node.type_ok(value):
            self._type_error(value, node, path, causes)
            return
        if isinstance(value, dict):
            self._object(value, node, path, causes, warnings)
        elif isinstance(value, list):
            if node.items is not None:
                for i, item in enumerate(value):
                    self._value(item, node.items, f"{path}[{i}]", causes, warnings)
        elif isinstance(value, str):
            self._string(value, node, path, causes)
        if node.enum is not None and value not in node.enum:
            shown = ", ".join(
                go_quote(v if isinstance(v, str) else json.dumps(v)) for v in node.enum
            )
            causes.append(
                Cause(
                    path,
                    "FieldValueNotSupported",
                    f"Unsupported value: {_show(value)}: supported values: {shown}",
                )
            )

    def _object(
        self,
        obj: dict[str, Any],
        node: _Node,
        path: str,
        causes: list[Cause],
        warnings: list[str],
        at_root: bool = False,
    ) -> None:
        for name in node.required:
            # A null in a non-nullable field is dropped before validation, so it counts as absent.
            child = self._child(node, name)
            if name not in obj or (obj[name] is None and not (child and child.nullable)):
                causes.append(Cause(_join(path, name), "FieldValueRequired", "Required value"))
        for key, value in obj.items():
            child_path = _join(path, key)
            if at_root and key == "metadata":
                if not isinstance(value, dict):
                    causes.append(_type_cause(value, "object", child_path))
                continue
            child = self._child(node, key)
            if child is None:
                if not node.keeps_unknown_fields() and not (
                    at_root and key in ("apiVersion", "kind")
                ):
                    warnings.append(f"unknown field {go_quote(child_path)}")
                continue
            if value is None and not child.nullable:
                continue
            self._value(value, child, child_path, causes, warnings)

    @staticmethod
    def _string(value: str, node: _Node, path: str, causes: list[Cause]) -> None:
        # kube-openapi counts runes for both bounds, whatever the message says.
        if node.max_length is not None and len(value) > node.max_length:
            causes.append(
                Cause(
                    path,
                    "FieldValueTooLong",
                    f"Too long: may not be more than {node.max_length} bytes",
                )
            )
        if node.min_length is not None and len(value) < node.min_length:
            causes.append(
                Cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {go_quote(value)}: {path} in body should be at least "
                    f"{node.min_length} chars long",
                )
            )
        if node.pattern is not None and not node.pattern.search(value):
            causes.append(
                Cause(
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {go_quote(value)}: {path} in body should match "
                    f"'{node.pattern.pattern}'",
                )
            )

    @staticmethod
    def _type_error(value: Any, node: _Node, path: str, causes: list[Cause]) -> None:
        causes.append(_type_cause(value, node.type_label(), path))


def _type_cause(value: Any, wanted: str, path: str) -> Cause:
    actual = go_quote(json_type(value))
    return Cause(
        path,
        "FieldValueTypeInvalid",
        f"Invalid value: {actual}: {path} in body must be of type {wanted}: {actual}",
    )


def _prune(value: Any, node: _Node) -> Any:
    if isinstance(value, dict):
        if node.type not in (None, "object"):
            return _clone(value)
        pruned = {}
        for key, item in value.items():
            child = SchemaValidator._child(node, key)
            if child is None:
                if node.keeps_unknown_fields():
                    pruned[key] = _clone(item)
                continue
            if item is None and not child.nullable:
                continue
            pruned[key] = _prune(item, child)
        return pruned
    if isinstance(value, list):
        if node.items is None:
            return _clone(value)
        return [_prune(item, node.items) for item in value]
    return value


def _clone(value: Any) -> Any:
    """A copy of decoded JSON, much faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The `openAPIV3Schema` of one version of a CustomResourceDefinition."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def load_crds(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Every CustomResourceDefinition in the YAML files of `directory`, keyed `<plural>.<group>`."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix not in (".yaml", ".yml"):
            continue
        with path.open("rb") as stream:
            for doc in yaml.load_all(stream, Loader=loader):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    spec = doc["spec"]
                    crds[f"{spec['names']['plural']}.{spec['group']}"] = doc
    return crds

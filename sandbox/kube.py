"""An in-process Kubernetes API server for what envportal and Argo CD touch, with real semantics.

`Cluster` is the store (objects, resourceVersions, watches, finalizers, garbage collection,
namespace termination, validation). `KubeAPI` serves it over HTTP the way kube-apiserver does,
so the official kubernetes client and kubectl work against it unchanged. Controllers in the
same process call `Cluster` directly, as the real ones would call the API.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import json
import logging
import os
import random
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import kube_validation, patch, selectors
from sandbox.httpserver import Request, Response
from sandbox.reference import reference_path

log = logging.getLogger("sandbox.kube")

Obj = dict[str, Any]

# The real Argo CD CRDs: the project's shared reference material beside the repo, else the
# copy in sandbox/reference/ (a clone on its own; a test keeps the copy identical).
CRD_DIR = Path(
    os.environ.get("SANDBOX_CRD_DIR") or reference_path("reference/argocd-crds", "argocd-crds")
)


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    singular: str = ""
    status_subresource: bool = False
    name_rule: str = "subdomain"  # "label" for namespaces and services
    # Delete answers with the object (pods, namespaces, custom resources) or a Status (most others).
    returns_deleted_object: bool = False
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`plural.group` as messages name it: `secrets`, `applications.argoproj.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = [
    Kind(
        "",
        "v1",
        "Namespace",
        "namespaces",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        name_rule="label",
        returns_deleted_object=True,
    ),
    Kind("", "v1", "Secret", "secrets"),
    Kind("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    Kind(
        "",
        "v1",
        "Service",
        "services",
        short_names=("svc",),
        status_subresource=True,
        name_rule="label",
    ),
    Kind(
        "",
        "v1",
        "Pod",
        "pods",
        short_names=("po",),
        status_subresource=True,
        returns_deleted_object=True,
    ),
    Kind("", "v1", "Event", "events", short_names=("ev",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    Kind(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        short_names=("deploy",),
        status_subresource=True,
        returns_deleted_object=True,
    ),
    Kind(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        short_names=("sts",),
        status_subresource=True,
        returns_deleted_object=True,
    ),
    Kind(
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
        short_names=("app", "apps"),
        returns_deleted_object=True,
        categories=("argocd",),
    ),
    Kind(
        "argoproj.io",
        "v1alpha1",
        "ApplicationSet",
        "applicationsets",
        short_names=("appset", "appsets"),
        status_subresource=True,
        returns_deleted_object=True,
        categories=("argocd",),
    ),
    Kind(
        "argoproj.io",
        "v1alpha1",
        "AppProject",
        "appprojects",
        short_names=("appproj", "appprojs"),
        returns_deleted_object=True,
        categories=("argocd",),
    ),
]
KIND_BY_PLURAL = {(k.group, k.plural): k for k in KINDS}
KIND_BY_NAME = {(k.group, k.kind): k for k in KINDS}

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's SimpleNameGenerator


class ApiError(Exception):
    """A Kubernetes `Status` failure: code, reason and message as kube-apiserver words them."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{kind.resource} "{name}" not found',
        {"name": name, "group": kind.group, "kind": kind.plural},
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Entry:
    """One stored object: the dict is never mutated after storing; `raw` is its JSON."""

    obj: Obj
    raw: bytes


@dataclass
class WatchEvent:
    rv: int
    kind: Kind
    type: str
    obj: Obj
    old: Obj | None = None


@dataclass
class Faults:
    error_rate: float = 0.0
    modes: tuple[str, ...] = ("500", "429", "timeout")
    latency: float = 0.0
    timeout_seconds: float = 15.0
    denied: set[tuple[str, str]] = field(default_factory=set)  # (verb, plural)


class Cluster:
    """The object store with kube-apiserver semantics."""

    def __init__(self, crd_dir: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 1000
        self.kind_rv: dict[Kind, int] = {}  # the last write of each kind (controllers' caches)
        self.caches: dict[str, Any] = {}
        self.objects: dict[Kind, dict[tuple[str, str], Entry]] = {k: {} for k in KINDS}
        self.events: collections.deque[WatchEvent] = collections.deque(maxlen=50_000)
        self.validators: dict[Kind, kube_validation.SchemaValidator] = {}
        crds = kube_validation.load_crds(crd_dir or CRD_DIR)
        for kind in KINDS:
            crd = crds.get(kind.resource)
            if crd:
                version = next(v for v in crd["spec"]["versions"] if v["name"] == kind.version)
                schema = version["schema"]["openAPIV3Schema"]
                self.validators[kind] = kube_validation.SchemaValidator(schema)
        self.closed = False

    # --- helpers -------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _store(self, kind: Kind, obj: Obj, event: str, old: Obj | None) -> Obj:
        rv = self._next_rv()
        self.kind_rv[kind] = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self.objects[kind][key] = Entry(obj, json.dumps(obj, separators=(",", ":")).encode())
        self.events.append(WatchEvent(rv, kind, event, obj, old))
        self.changed.notify_all()
        return obj

    def _entry(self, kind: Kind, namespace: str, name: str) -> Entry:
        entry = self.objects[kind].get((namespace if kind.namespaced else "", name))
        if entry is None:
            raise not_found(kind, name)
        return entry

    def _check_namespace(self, kind: Kind, namespace: str, name: str) -> None:
        if not kind.namespaced:
            return
        if not namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match")
        ns = self.objects[KIND_BY_PLURAL[("", "namespaces")]].get(("", namespace))
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns.obj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{kind.resource} "{name}" is forbidden: unable to create new content in '
                f"namespace {namespace} because it is being terminated",
                {"name": name, "group": kind.group, "kind": kind.plural},
            )

    def _validate(
        self, kind: Kind, obj: Obj, field_validation: str = "Warn"
    ) -> tuple[Obj, list[str]]:
        """Validate like the API server: 400 for a wrong kind, 422 with causes for bad fields."""
        if obj.get("apiVersion") not in (None, kind.api_version) or obj.get("kind") not in (
            None,
            kind.kind,
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version ({kind.api_version})",
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        name = meta.get("name", "")
        causes: list[kube_validation.Cause] = []
        if not name:
            causes.append(
                kube_validation.Cause(
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                )
            )
        else:
            errors = (
                kube_validation.label_errors(name)
                if kind.name_rule == "label"
                else kube_validation.subdomain_errors(name)
            )
            for error in errors:
                causes.append(
                    kube_validation.Cause(
                        "metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {error}'
                    )
                )
        for key in ("labels", "annotations"):
            values = meta.get(key) or {}
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                causes.append(
                    kube_validation.Cause(
                        f"metadata.{key}", "FieldValueTypeInvalid", "Invalid value: must be strings"
                    )
                )
        warnings: list[str] = []
        validator = self.validators.get(kind)
        if validator is not None:
            schema_causes, warnings = validator.validate(obj)
            causes.extend(schema_causes)
            obj = validator.prune(obj)
            if warnings and field_validation == "Strict":
                raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(warnings))
            if field_validation == "Ignore":
                warnings = []
        if kind.kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError):
                    causes.append(
                        kube_validation.Cause(
                            f"data[{key}]",
                            "FieldValueInvalid",
                            "Invalid value: illegal base64 data",
                        )
                    )
        if causes:
            shown = name or meta.get("generateName", "")
            label = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
            message = f'{label} "{shown}" is invalid: ' + ", ".join(
                f"{c.field}: {c.message}" for c in causes
            )
            raise ApiError(
                422,
                "Invalid",
                message,
                {
                    "name": shown,
                    "group": kind.group,
                    "kind": kind.kind,
                    "causes": [
                        {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
                    ],
                },
            )
        return obj, warnings

    @staticmethod
    def _normalize_secret(obj: Obj) -> None:
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
        obj.setdefault("type", "Opaque")

    @staticmethod
    def _spec_of(obj: Obj) -> Obj:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    # --- reads ---------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        with self.lock:
            return json.loads(self._entry(kind, namespace, name).raw)

    def find(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        try:
            return self.get(kind, namespace, name)
        except ApiError:
            return None

    def list_objects(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Obj]:
        with self.lock:
            entries = self._select(kind, namespace, label_selector, field_selector)
            return [json.loads(e.raw) for e in entries]

    def peek(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """The stored object itself, for the controllers: read it, never change it."""
        with self.lock:
            entry = self.objects[kind].get((namespace if kind.namespaced else "", name))
            return entry.obj if entry else None

    def peek_all(
        self, kind: Kind, namespace: str | None = None, label_selector: str = ""
    ) -> list[Obj]:
        """The stored objects themselves (no copy: the controllers' reads at thousands of
        objects a tick); read them, never change them."""
        with self.lock:
            return [e.obj for e in self._select(kind, namespace, label_selector, "")]

    def _select(
        self, kind: Kind, namespace: str | None, label_selector: str, field_selector: str
    ) -> list[Entry]:
        try:
            match_labels = selectors.parse_label_selector(label_selector)
            match_fields = selectors.parse_field_selector(field_selector)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc
        result = []
        for (ns, _), entry in sorted(self.objects[kind].items()):
            if namespace and ns != namespace:
                continue
            meta = entry.obj["metadata"]
            if label_selector and not match_labels(meta.get("labels") or {}):
                continue
            if field_selector and not match_fields(entry.obj):
                continue
            result.append(entry)
        return result

    # --- writes --------------------------------------------------------------------------

    def create(
        self,
        kind: Kind,
        namespace: str,
        body: Obj,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> tuple[Obj, list[str]]:
        obj = copy.deepcopy(body)
        with self.lock:
            meta = obj.setdefault("metadata", {}) if isinstance(obj, dict) else None
            if not isinstance(obj, dict) or not isinstance(meta, dict):
                raise ApiError(400, "BadRequest", "the body of the request was not an object")
            if kind.namespaced:
                body_ns = meta.get("namespace")
                if body_ns and namespace and body_ns != namespace:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace "
                        "sent on the request",
                    )
                namespace = namespace or body_ns or ""
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(GENERATE_NAME_ALPHABET, k=5))  # noqa: S311
                meta["name"] = meta["generateName"] + suffix
            obj, warnings = self._validate(kind, obj, field_validation)
            meta = obj["metadata"]
            self._check_namespace(kind, namespace, meta["name"])
            key = (namespace if kind.namespaced else "", meta["name"])
            if key in self.objects[kind]:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{kind.resource} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": kind.group, "kind": kind.plural},
                )
            for drop in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(drop, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            if kind.status_subresource:
                obj.pop("status", None)
            if kind.kind == "Secret":
                self._normalize_secret(obj)
            if kind.kind == "Namespace":
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            if dry_run:
                return obj, warnings
            return self._store(kind, obj, "ADDED", None), warnings

    def replace(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Obj,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> tuple[Obj, list[str]]:
        obj = copy.deepcopy(body)
        with self.lock:
            current = self._entry(kind, namespace, name).obj
            if not isinstance(obj, dict):
                raise ApiError(400, "BadRequest", "the body of the request was not an object")
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the name of the object ({meta.get('name')}) does not match the name on "
                    f"the URL ({name})",
                )
            meta["name"] = name
            if kind.namespaced:
                meta["namespace"] = current["metadata"]["namespace"]
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": kind.group, "kind": kind.plural},
                )
            if subresource == "status":
                merged = copy.deepcopy(current)
                merged["status"] = obj.get("status")
                obj = merged
            elif kind.status_subresource and "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
            elif kind.status_subresource:
                obj.pop("status", None)
            obj, warnings = self._validate(kind, obj, field_validation)
            meta = obj["metadata"]
            for keep in ("uid", "creationTimestamp", "deletionTimestamp", "generateName"):
                if keep in current["metadata"]:
                    meta[keep] = current["metadata"][keep]
                else:
                    meta.pop(keep, None)
            if kind.kind == "Secret":
                self._normalize_secret(obj)
            if kind.kind == "Namespace":
                obj["status"] = current.get("status", {"phase": "Active"})
            generation = current["metadata"].get("generation", 1)
            if self._spec_of(obj) != self._spec_of(current):
                generation += 1
            meta["generation"] = generation
            if current["metadata"].get("deletionTimestamp") and not set(
                meta.get("finalizers") or []
            ) <= set(current["metadata"].get("finalizers") or []):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{kind.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new '
                    "finalizers can be added if the object is being deleted",
                )
            if dry_run:
                return obj, warnings
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._remove(kind, obj)
                return obj, warnings
            if obj == current:
                return json.loads(self.objects[kind][self._key(kind, obj)].raw), warnings
            return self._store(kind, obj, "MODIFIED", current), warnings

    @staticmethod
    def _key(kind: Kind, obj: Obj) -> tuple[str, str]:
        return (
            obj["metadata"].get("namespace", "") if kind.namespaced else "",
            obj["metadata"]["name"],
        )

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Any,
        content_type: str = "application/merge-patch+json",
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> tuple[Obj, list[str]]:
        with self.lock:
            current = self.get(kind, namespace, name)
            try:
                if "json-patch" in content_type:
                    if not isinstance(body, list):
                        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
                    patched = patch.json_patch(current, body)
                elif "strategic-merge-patch" in content_type:
                    if kind.group == "argoproj.io":
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media "
                            "types include: application/json-patch+json, "
                            "application/merge-patch+json, application/apply-patch+yaml",
                        )
                    patched = patch.strategic_merge_patch(current, body)
                else:
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "merge patch must be an object")
                    patched = patch.merge_patch(current, body)
            except patch.PatchError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
            # A patch carries a resourceVersion precondition only when it names one itself.
            if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
                patched["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
            else:
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.replace(
                kind, namespace, name, patched, subresource, dry_run, field_validation
            )

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        propagation: str = "Background",
        preconditions: Obj | None = None,
        dry_run: bool = False,
    ) -> Obj:
        with self.lock:
            current = self._entry(kind, namespace, name).obj
            if preconditions:
                for key in ("uid", "resourceVersion"):
                    if preconditions.get(key) and preconditions[key] != current["metadata"].get(
                        key
                    ):
                        raise ApiError(
                            409,
                            "Conflict",
                            f'Operation cannot be fulfilled on {kind.resource} "{name}": '
                            f"Precondition failed: {key} in precondition: {preconditions[key]}, "
                            f"{key} in object meta: {current['metadata'].get(key)}",
                        )
            if dry_run:
                return json.loads(self.objects[kind][self._key(kind, current)].raw)
            obj = copy.deepcopy(current)
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if propagation == "Foreground" and self._dependents(current):
                finalizers.append("foregroundDeletion")
            if propagation == "Orphan":
                self._orphan(current)
            if kind.kind == "Namespace":
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now_rfc3339()
                    meta["deletionGracePeriodSeconds"] = 0
                    obj["status"] = {"phase": "Terminating"}
                    stored = self._store(kind, obj, "MODIFIED", current)
                    self._terminate_namespace(name)
                    return stored
                return current
            if finalizers:
                if meta.get("deletionTimestamp"):
                    return json.loads(self.objects[kind][self._key(kind, current)].raw)
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
                meta["finalizers"] = finalizers
                stored = self._store(kind, obj, "MODIFIED", current)
                if "foregroundDeletion" in finalizers:
                    self._delete_dependents(current)
                return stored
            self._remove(kind, obj)
            return obj

    def _remove(self, kind: Kind, obj: Obj) -> None:
        key = self._key(kind, obj)
        current = self.objects[kind].pop(key).obj
        rv = self._next_rv()
        self.kind_rv[kind] = rv
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(rv)
        self.events.append(WatchEvent(rv, kind, "DELETED", gone, current))
        self.changed.notify_all()
        self._delete_dependents(current)
        self._finish_foreground_owners(current)
        if kind.kind == "Namespace":
            return
        if kind.namespaced:
            self._maybe_finish_namespace(key[0])

    # --- garbage collection and namespace termination ----------------------------------

    def _dependents(self, owner: Obj) -> list[tuple[Kind, Obj]]:
        uid = owner["metadata"]["uid"]
        found = []
        for kind, entries in self.objects.items():
            for entry in entries.values():
                refs = entry.obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    found.append((kind, entry.obj))
        return found

    def _delete_dependents(self, owner: Obj) -> None:
        for kind, dependent in self._dependents(owner):
            meta = dependent["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            with contextlib.suppress(ApiError):
                self.delete(kind, meta.get("namespace", ""), meta["name"])

    def _orphan(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for kind, dependent in self._dependents(owner):
            obj = copy.deepcopy(dependent)
            refs = [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != uid]
            obj["metadata"]["ownerReferences"] = refs
            self._store(kind, obj, "MODIFIED", dependent)

    def _finish_foreground_owners(self, dependent: Obj) -> None:
        for ref in dependent["metadata"].get("ownerReferences") or []:
            for kind, entries in self.objects.items():
                for entry in list(entries.values()):
                    owner = entry.obj
                    if owner["metadata"].get("uid") != ref.get("uid"):
                        continue
                    finalizers = owner["metadata"].get("finalizers") or []
                    if "foregroundDeletion" in finalizers and not self._dependents(owner):
                        updated = copy.deepcopy(owner)
                        updated["metadata"]["finalizers"] = [
                            f for f in finalizers if f != "foregroundDeletion"
                        ]
                        if updated["metadata"]["finalizers"]:
                            self._store(kind, updated, "MODIFIED", owner)
                        else:
                            self._remove(kind, updated)

    def _terminate_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything in it, then the namespace itself."""
        for kind in KINDS:
            if not kind.namespaced:
                continue
            for (ns, name), entry in list(self.objects[kind].items()):
                if ns == namespace and not entry.obj["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.delete(kind, ns, name)
        self._maybe_finish_namespace(namespace)

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns_kind = KIND_BY_PLURAL[("", "namespaces")]
        entry = self.objects[ns_kind].get(("", namespace))
        if entry is None or not entry.obj["metadata"].get("deletionTimestamp"):
            return
        for kind in KINDS:
            if kind.namespaced and any(ns == namespace for ns, _ in self.objects[kind]):
                return
        self._remove(ns_kind, copy.deepcopy(entry.obj))

    # --- watch ---------------------------------------------------------------------------

    def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout: float = 300.0,
        bookmarks: bool = False,
    ) -> Iterator[Obj]:
        """Yield watch events ({type, object}) after `resource_version` until the timeout."""
        try:
            match_labels = selectors.parse_label_selector(label_selector)
            match_fields = selectors.parse_field_selector(field_selector)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            if namespace and meta.get("namespace") != namespace:
                return False
            return match_labels(meta.get("labels") or {}) and match_fields(obj)

        with self.lock:
            if resource_version in ("", "0"):
                initial = [
                    e.obj for e in self._select(kind, namespace, label_selector, field_selector)
                ]
                since = self.rv
            else:
                initial = []
                since = int(resource_version)
                oldest = self.events[0].rv if self.events else self.rv
                if since < oldest - 1 and since < self.rv:
                    initial = []
                    gone = ApiError(410, "Expired", f"too old resource version: {since} ({oldest})")
                    yield {"type": "ERROR", "object": gone.status()}
                    return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        deadline = time.monotonic() + timeout
        while not self.closed:
            with self.lock:
                pending = [e for e in self.events if e.rv > since and e.kind is kind]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.changed.wait(timeout=min(remaining, 5.0))
                    if bookmarks and not [e for e in self.events if e.rv > since]:
                        yield {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": kind.kind,
                                "apiVersion": kind.api_version,
                                "metadata": {"resourceVersion": str(self.rv)},
                            },
                        }
                    continue
                since = max(since, pending[-1].rv)
            for event in pending:
                now_matches, before_matched = matches(event.obj), matches(event.old)
                if event.type == "MODIFIED" and before_matched and not now_matches:
                    yield {"type": "DELETED", "object": event.obj}
                elif event.type == "MODIFIED" and now_matches and not before_matched:
                    yield {"type": "ADDED", "object": event.obj}
                elif now_matches or (event.type == "DELETED" and before_matched):
                    yield {"type": event.type, "object": event.obj}
            if time.monotonic() > deadline:
                return


# --- HTTP ---------------------------------------------------------------------------------


def age(timestamp: str | None) -> str:
    """kubectl's short age (`translateTimestampSince`): 45s, 12m, 3h5m, 2d."""
    if not timestamp:
        return "<unknown>"
    created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h"
    return f"{hours // 24}d"


def _dig(obj: Obj, path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# Server-side printing (what `kubectl get` shows): name, extra columns, age.
COLUMNS: dict[str, list[tuple[str, Callable[[Obj], Any]]]] = {
    "namespaces": [("Status", lambda o: _dig(o, "status.phase"))],
    "secrets": [
        ("Type", lambda o: o.get("type")),
        ("Data", lambda o: len(o.get("data") or {})),
    ],
    "configmaps": [("Data", lambda o: len(o.get("data") or {}))],
    "statefulsets": [
        (
            "Ready",
            lambda o: f"{_dig(o, 'status.readyReplicas') or 0}/{_dig(o, 'spec.replicas') or 0}",
        )
    ],
    "deployments": [
        (
            "Ready",
            lambda o: f"{_dig(o, 'status.readyReplicas') or 0}/{_dig(o, 'spec.replicas') or 0}",
        )
    ],
    "pods": [("Status", lambda o: _dig(o, "status.phase"))],
    "applications": [
        ("Sync Status", lambda o: _dig(o, "status.sync.status")),
        ("Health Status", lambda o: _dig(o, "status.health.status")),
    ],
}


class KubeAPI:
    """Serves a `Cluster` over HTTP as kube-apiserver does (JSON only)."""

    def __init__(self, cluster: Cluster, token: str) -> None:
        self.cluster = cluster
        self.token = token
        self.faults = Faults()
        self.random = random.Random(7)  # noqa: S311 - fault injection, not security
        self.stats: collections.Counter[str] = collections.Counter()
        self.stats_lock = threading.Lock()

    def reset_stats(self) -> None:
        with self.stats_lock:
            self.stats.clear()

    def __call__(self, request: Request) -> Response:
        if request.headers.get("authorization", "") != f"Bearer {self.token}":
            return self._status(ApiError(401, "Unauthorized", "Unauthorized"))
        if self.faults.latency:
            time.sleep(self.faults.latency)
        path = request.path.rstrip("/") or "/"
        try:
            if path == "/version":
                return Response.json(
                    {
                        "major": "1",
                        "minor": "32",
                        "gitVersion": "v1.32.0-sandbox",
                        "gitCommit": "0" * 40,
                        "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "go1.23",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    }
                )
            if path in ("/healthz", "/readyz", "/livez"):
                return Response(200, b"ok", {"Content-Type": "text/plain"})
            if path == "/api":
                return Response.json(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {
                                "clientCIDR": "0.0.0.0/0",
                                "serverAddress": request.headers.get("host", ""),
                            }
                        ],
                    }
                )
            if path == "/apis":
                return Response.json(self._group_list())
            if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
                return Response.json(self._openapi_v3(path[len("/openapi/v3") :].strip("/")))
            parts = path.strip("/").split("/")
            if parts[0] == "api" and len(parts) == 2:
                return Response.json(self._resource_list("", parts[1]))
            if parts[0] == "apis" and len(parts) == 3:
                return Response.json(self._resource_list(parts[1], parts[2]))
            if parts[0] == "apis" and len(parts) == 2:
                return Response.json(self._group(parts[1]))
            return self._resource(request, parts)
        except ApiError as exc:
            return self._status(exc)

    @staticmethod
    def _status(exc: ApiError, headers: dict[str, str] | None = None) -> Response:
        return Response.json(exc.status(), exc.code, headers)

    def _openapi_v3(self, group_version: str) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that PATCH takes `fieldValidation`, so it
        leaves validation to the server (which validates against the real CRD schemas)."""
        versions = sorted({("api/" if not k.group else "apis/") + k.api_version for k in KINDS})
        if not group_version:
            return {
                "paths": {
                    gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sandbox"} for gv in versions
                }
            }
        if group_version not in versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        paths: Obj = {}
        for k in KINDS:
            if ("api/" if not k.group else "apis/") + k.api_version != group_version:
                continue
            scope = "namespaces/{namespace}/" if k.namespaced else ""
            gvk = {"group": k.group, "version": k.version, "kind": k.kind}
            params = [
                {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                for n in ("dryRun", "fieldManager", "fieldValidation")
            ]
            operation = {
                "operationId": f"patch{k.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            }
            paths[f"/{group_version}/{scope}{k.plural}/{{name}}"] = {"patch": operation}
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0-sandbox"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    def _groups(self) -> list[str]:
        return sorted({k.group for k in KINDS if k.group})

    def _group(self, group: str) -> Obj:
        versions = sorted({k.version for k in KINDS if k.group == group})
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gv,
            "preferredVersion": gv[0],
        }

    def _group_list(self) -> Obj:
        groups = []
        for group in self._groups():
            g = self._group(group)
            del g["kind"], g["apiVersion"]
            groups.append(g)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = []
        for k in KINDS:
            if k.group != group or k.version != version:
                continue
            verbs = [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
            entry: Obj = {
                "name": k.plural,
                "singularName": k.singular or k.kind.lower(),
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": verbs,
            }
            if k.short_names:
                entry["shortNames"] = list(k.short_names)
            if k.categories:
                entry["categories"] = list(k.categories)
            resources.append(entry)
            if k.status_subresource:
                resources.append(
                    {
                        "name": f"{k.plural}/status",
                        "singularName": "",
                        "namespaced": k.namespaced,
                        "kind": k.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def _resource(self, request: Request, parts: list[str]) -> Response:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = (
            rest[0],
            (rest[1] if len(rest) > 1 else ""),
            (rest[2] if len(rest) > 2 else ""),
        )
        kind = KIND_BY_PLURAL.get((group, plural))
        if kind is None or kind.version != version or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and sub != "status" and not (sub == "finalize" and kind.kind == "Namespace"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = self._verb(request, name)
        with self.stats_lock:
            self.stats[verb] += 1
            self.stats[f"{verb} {kind.plural}"] += 1
        self._check_access(verb, kind, namespace, name)
        fault = self._fault()
        if fault is not None:
            return fault
        dry_run = request.arg("dryRun") == "All"
        validation = request.arg("fieldValidation") or "Warn"
        cluster = self.cluster
        if verb == "watch":
            return self._watch(request, kind, namespace)
        if verb == "list":
            return self._list(request, kind, namespace)
        if verb == "get":
            return Response.json(cluster.get(kind, namespace, name))
        body = self._body(request)
        if verb == "create":
            obj, warnings = cluster.create(kind, namespace, body, dry_run, validation)
            return Response.json(obj, 201, self._warnings(warnings))
        if verb == "update":
            obj, warnings = cluster.replace(kind, namespace, name, body, sub, dry_run, validation)
            return Response.json(obj, 200, self._warnings(warnings))
        if verb == "patch":
            content_type = request.headers.get("content-type", "application/merge-patch+json")
            if "apply-patch" in content_type:
                raise ApiError(
                    415, "UnsupportedMediaType", "server-side apply is not emulated by the sandbox"
                )
            obj, warnings = cluster.patch(
                kind, namespace, name, body, content_type, sub, dry_run, validation
            )
            return Response.json(obj, 200, self._warnings(warnings))
        if verb == "deletecollection":
            for item in cluster.list_objects(
                kind, namespace or None, request.arg("labelSelector"), request.arg("fieldSelector")
            ):
                cluster.delete(
                    kind, item["metadata"].get("namespace", ""), item["metadata"]["name"]
                )
            return Response.json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            )
        options = body if isinstance(body, dict) else {}
        propagation = (
            request.arg("propagationPolicy") or options.get("propagationPolicy") or "Background"
        )
        if request.arg("orphanDependents") == "true" or options.get("orphanDependents") is True:
            propagation = "Orphan"
        obj = cluster.delete(
            kind, namespace, name, propagation, options.get("preconditions"), dry_run
        )
        if kind.returns_deleted_object or obj["metadata"].get("deletionTimestamp"):
            return Response.json(obj)
        return Response.json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": kind.group,
                    "kind": kind.plural,
                    "uid": obj["metadata"]["uid"],
                },
            }
        )

    @staticmethod
    def _verb(request: Request, name: str) -> str:
        method = request.method
        if method in ("GET", "HEAD"):
            if request.arg("watch") in ("true", "1"):
                return "watch"
            return "get" if name else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method, "unknown")

    def _check_access(self, verb: str, kind: Kind, namespace: str, name: str) -> None:
        if (verb, kind.plural) in self.faults.denied or (verb, "*") in self.faults.denied:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise ApiError(
                403,
                "Forbidden",
                f'{kind.resource} "{name}" is forbidden: User "system:serviceaccount:envportal:'
                f'envportal" cannot {verb} resource "{kind.plural}" in API group '
                f'"{kind.group}"{where}',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )

    def _fault(self) -> Response | None:
        faults = self.faults
        if not faults.error_rate or self.random.random() >= faults.error_rate:
            return None
        mode = self.random.choice(faults.modes)
        with self.stats_lock:
            self.stats[f"fault {mode}"] += 1
        if mode == "429":
            return self._status(
                ApiError(
                    429,
                    "TooManyRequests",
                    "too many requests, please try again later",
                    {"retryAfterSeconds": 1},
                ),
                {"Retry-After": "1"},
            )
        if mode == "timeout":
            time.sleep(faults.timeout_seconds)
            return self._status(
                ApiError(
                    504,
                    "Timeout",
                    "the server was unable to return a response in the time allotted",
                )
            )
        return self._status(
            ApiError(500, "InternalError", "Internal error occurred: injected fault")
        )

    @staticmethod
    def _body(request: Request) -> Any:
        if not request.body:
            return {}
        try:
            return json.loads(request.body)
        except ValueError as exc:
            raise ApiError(
                400, "BadRequest", f"the body of the request was not valid JSON: {exc}"
            ) from exc

    @staticmethod
    def _warnings(warnings: list[str]) -> dict[str, str]:
        if not warnings:
            return {}
        return {"Warning": ", ".join(f'299 - "{w}"' for w in warnings[:20])}

    def _list(self, request: Request, kind: Kind, namespace: str) -> Response:
        cluster = self.cluster
        with cluster.lock:
            entries = cluster._select(
                kind, namespace or None, request.arg("labelSelector"), request.arg("fieldSelector")
            )
            rv = str(cluster.rv)
        start = 0
        token = request.arg("continue")
        if token:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(token))["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "BadRequest", "continue key is not valid") from exc
        limit = int(request.arg("limit") or 0)
        end = start + limit if limit else len(entries)
        page = entries[start:end]
        meta: Obj = {"resourceVersion": rv}
        if end < len(entries):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": end}).encode()
            ).decode()
            meta["remainingItemCount"] = len(entries) - end
        if "as=Table" in request.headers.get("accept", ""):
            return Response.json(self._table(kind, [e.obj for e in page], meta))
        head = json.dumps(
            {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta},
            separators=(",", ":"),
        ).encode()
        body = head[:-1] + b',"items":[' + b",".join(e.raw for e in page) + b"]}"
        return Response(200, body, {"Content-Type": "application/json"})

    def _table(self, kind: Kind, objects: list[Obj], meta: Obj) -> Obj:
        extra = COLUMNS.get(kind.plural, [])
        columns = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name",
                "priority": 0,
            }
        ]
        columns += [
            {"name": n, "type": "string", "format": "", "description": n, "priority": 0}
            for n, _ in extra
        ]
        columns.append(
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}
        )
        rows = []
        for obj in objects:
            cells = [obj["metadata"]["name"]]
            cells += [(fn(obj) if fn(obj) is not None else "") for _, fn in extra]
            cells.append(age(obj["metadata"].get("creationTimestamp")))
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": columns,
            "rows": rows,
        }

    def _watch(self, request: Request, kind: Kind, namespace: str) -> Response:
        timeout = float(request.arg("timeoutSeconds") or 300)
        events = self.cluster.watch(
            kind,
            namespace or None,
            request.arg("resourceVersion"),
            request.arg("labelSelector"),
            request.arg("fieldSelector"),
            timeout=min(timeout, 600),
            bookmarks=request.arg("allowWatchBookmarks") == "true",
        )

        def stream() -> Iterator[bytes]:
            for event in events:
                yield json.dumps(event, separators=(",", ":")).encode() + b"\n"

        return Response(200, stream(), {"Content-Type": "application/json"})


def kubeconfig(server: str, token: str, ca_pem: str = "", namespace: str = "default") -> str:
    """A kubeconfig pointing at the emulator with a bearer token (and its CA for HTTPS)."""
    cluster: Obj = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": cluster}],
            "users": [{"name": "envportal", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "sandbox",
                    "context": {"cluster": "sandbox", "user": "envportal", "namespace": namespace},
                }
            ],
            "current-context": "sandbox",
        },
        indent=2,
    )


def random_token() -> str:
    return "".join(random.SystemRandom().choices(string.ascii_letters + string.digits, k=40))

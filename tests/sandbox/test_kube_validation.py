from __future__ import annotations

import copy
import time

import pytest
import yaml

from sandbox.kube_validation import (
    Cause,
    SchemaValidator,
    crd_schema,
    label_errors,
    load_crds,
    subdomain_errors,
)
from sandbox.reference import reference_path

# The project's shared reference material beside the repository (or the sandbox's copy).
CRD_DIR = reference_path("reference/argocd-crds", "argocd-crds")
SEED = reference_path("seed/applicationsets.yaml", "applicationsets.yaml")

LABEL_REGEX_ERROR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


@pytest.fixture(scope="module")
def crds() -> dict[str, dict]:
    if not CRD_DIR.is_dir():
        pytest.skip("the Argo CD CRDs are not in shared/reference")
    return load_crds(CRD_DIR)


@pytest.fixture(scope="module")
def applications(crds) -> SchemaValidator:
    return SchemaValidator(crd_schema(crds["applications.argoproj.io"], "v1alpha1"))


@pytest.fixture(scope="module")
def applicationsets(crds) -> SchemaValidator:
    return SchemaValidator(crd_schema(crds["applicationsets.argoproj.io"], "v1alpha1"))


def an_application() -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "sampleapp-feature-x-7", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/a1tan/app-ephemeraltest.git",
                "targetRevision": "0123456789abcdef",
                "path": "charts/sampleapp",
                "helm": {"parameters": [{"name": "image.tag", "value": "pull-0123"}]},
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "ns-7"},
            "syncPolicy": {"automated": {"allowEmpty": True, "prune": True, "selfHeal": True}},
        },
    }


# --- DNS names -------------------------------------------------------------------------------


def test_a_valid_label_has_no_errors():
    assert label_errors("sampleapp-ns-feature-x-7-namespace") == []
    assert label_errors("a") == []
    assert label_errors("123-abc") == []


def test_it_rejects_labels_with_the_apimachinery_message():
    assert label_errors("feature/blabla") == [LABEL_REGEX_ERROR]
    assert label_errors("-x") == [LABEL_REGEX_ERROR]
    assert label_errors("Upper") == [LABEL_REGEX_ERROR]
    assert label_errors("") == [LABEL_REGEX_ERROR]
    assert label_errors("a.b") == [LABEL_REGEX_ERROR]


def test_it_reports_both_length_and_format_of_a_label():
    assert label_errors("a" * 63) == []
    assert label_errors("a" * 64) == ["must be no more than 63 characters"]
    assert label_errors("A" * 64) == ["must be no more than 63 characters", LABEL_REGEX_ERROR]


def test_subdomains_allow_dots_up_to_253_characters():
    assert subdomain_errors("cluster-x-1.cluster-x-1-namespace.svc.cluster.local") == []
    assert subdomain_errors("a" * 253) == []
    assert subdomain_errors("a" * 254) == ["must be no more than 253 characters"]
    assert subdomain_errors("a..b") == [
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ]


# --- CRDs ------------------------------------------------------------------------------------


def test_it_loads_the_argo_cd_crds_by_plural_and_group(crds):
    assert set(crds) == {
        "applications.argoproj.io",
        "applicationsets.argoproj.io",
        "appprojects.argoproj.io",
    }


def test_the_seed_applicationsets_validate_cleanly(applicationsets):
    docs = [d for d in yaml.safe_load_all(SEED.read_text()) if d]
    assert [d["metadata"]["name"] for d in docs] == [
        "sampleapps",
        "ephemeralcluster",
        "sampleapps-ns",
    ]
    for doc in docs:
        assert applicationsets.validate(doc) == ([], [])
        assert applicationsets.prune(doc) == doc


def test_a_complete_application_is_valid(applications):
    assert applications.validate(an_application()) == ([], [])


def test_it_requires_the_destination(applications):
    app = an_application()
    del app["spec"]["destination"]
    causes, _ = applications.validate(app)
    assert causes == [Cause("spec.destination", "FieldValueRequired", "Required value")]


def test_it_rejects_a_helm_parameter_name_that_is_not_a_string(applications):
    app = an_application()
    app["spec"]["source"]["helm"]["parameters"][0]["name"] = 5
    causes, _ = applications.validate(app)
    field = "spec.source.helm.parameters[0].name"
    assert causes == [
        Cause(
            field,
            "FieldValueTypeInvalid",
            f'Invalid value: "integer": {field} in body must be of type string: "integer"',
        )
    ]
    assert str(causes[0]).startswith(f"{field}: Invalid value:")


def test_it_warns_about_and_prunes_unknown_fields(applications):
    app = an_application()
    app["spec"]["colour"] = "blue"
    app["spec"]["source"]["helm"]["parameters"][0]["weight"] = 3
    app["extra"] = True
    causes, warnings = applications.validate(app)
    assert causes == []
    assert warnings == [
        'unknown field "spec.source.helm.parameters[0].weight"',
        'unknown field "spec.colour"',
        'unknown field "extra"',
    ]
    assert applications.prune(app) == an_application()


def test_pruning_keeps_the_root_metadata_and_never_mutates(applications):
    app = an_application()
    app["metadata"]["labels"] = {"a": "b"}
    app["metadata"]["someday"] = "kept for the server's own metadata handling"
    original = copy.deepcopy(app)
    pruned = applications.prune(app)
    assert pruned["metadata"] == app["metadata"]
    assert app == original
    pruned["metadata"]["labels"]["a"] = "changed"
    pruned["spec"]["source"]["helm"]["parameters"][0]["value"] = "changed"
    assert app == original


def test_preserve_unknown_fields_keeps_helm_values_objects(applications):
    app = an_application()
    app["spec"]["source"]["helm"]["valuesObject"] = {"image": {"tag": "x"}, "replicas": 2}
    assert applications.validate(app) == ([], [])
    assert applications.prune(app) == app


def test_it_accepts_a_status_with_real_argo_cd_fields(applications):
    app = an_application()
    app["status"] = {
        "sync": {"status": "Synced", "revision": "0123456789abcdef"},
        "health": {"status": "Healthy"},
        "reconciledAt": "2026-01-01T00:00:00Z",
        "resources": [
            {"kind": "Deployment", "name": "web", "namespace": "ns-7", "version": "v1"},
        ],
        "operationState": {
            "phase": "Succeeded",
            "message": "successfully synced",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:05Z",
            "operation": {"sync": {"revision": "0123456789abcdef"}},
        },
        "summary": {"images": ["registry/sampleapp:pull-0123"]},
    }
    assert applications.validate(app) == ([], [])
    assert applications.prune(app) == app


def test_nulls_in_non_nullable_fields_are_dropped_not_rejected(applications):
    app = an_application()
    app["status"] = {"operationState": None, "health": {"status": "Healthy"}}
    assert applications.validate(app) == ([], [])
    assert applications.prune(app)["status"] == {"health": {"status": "Healthy"}}


def test_an_object_where_a_string_belongs_is_a_type_error(applications):
    app = an_application()
    app["spec"]["project"] = {"name": "default"}
    causes, _ = applications.validate(app)
    assert causes == [
        Cause(
            "spec.project",
            "FieldValueTypeInvalid",
            'Invalid value: "object": spec.project in body must be of type string: "object"',
        )
    ]


def test_int_or_string_accepts_both():
    schema = {
        "type": "object",
        "properties": {"replicas": {"x-kubernetes-int-or-string": True, "anyOf": [{}, {}]}},
    }
    validator = SchemaValidator(schema)
    assert validator.validate({"replicas": 3}) == ([], [])
    assert validator.validate({"replicas": "50%"}) == ([], [])
    causes, _ = validator.validate({"replicas": True})
    assert causes[0].message == (
        'Invalid value: "boolean": replicas in body must be of type integer,string: "boolean"'
    )


def test_small_schemas_check_enum_pattern_and_lengths():
    validator = SchemaValidator(
        {
            "type": "object",
            "required": ["phase"],
            "properties": {
                "phase": {"type": "string", "enum": ["Hydrating", "Failed"]},
                "path": {"type": "string", "minLength": 1, "pattern": "^.{2,}|[^./]$"},
                "code": {"type": "string", "maxLength": 3},
                "count": {"type": "integer", "format": "int64"},
                "ratio": {"type": "number"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "additionalProperties": True},
                "maybe": {"type": "string", "nullable": True},
            },
        }
    )
    ok = {
        "phase": "Failed",
        "path": "charts/x",
        "code": "abc",
        "count": 3,
        "ratio": 0.5,
        "labels": {"a": "b"},
        "free": {"anything": [1, {"x": None}]},
        "maybe": None,
    }
    assert validator.validate(ok) == ([], [])
    assert validator.prune(ok) == ok
    assert validator.validate({"phase": "Failed", "count": 2.0}) == ([], [])

    causes, _ = validator.validate(
        {"phase": "Done", "path": ".", "code": "abcd", "count": 1.5, "labels": {"a": 1}}
    )
    assert causes == [
        Cause(
            "phase",
            "FieldValueNotSupported",
            'Unsupported value: "Done": supported values: "Hydrating", "Failed"',
        ),
        Cause(
            "path",
            "FieldValueInvalid",
            "Invalid value: \".\": path in body should match '^.{2,}|[^./]$'",
        ),
        Cause("code", "FieldValueTooLong", "Too long: may not be more than 3 bytes"),
        Cause(
            "count",
            "FieldValueTypeInvalid",
            'Invalid value: "number": count in body must be of type integer: "number"',
        ),
        Cause(
            "labels.a",
            "FieldValueTypeInvalid",
            'Invalid value: "integer": labels.a in body must be of type string: "integer"',
        ),
    ]
    causes, _ = validator.validate({"path": ""})
    assert causes == [
        Cause("phase", "FieldValueRequired", "Required value"),
        Cause(
            "path",
            "FieldValueInvalid",
            'Invalid value: "": path in body should be at least 1 chars long',
        ),
        Cause(
            "path",
            "FieldValueInvalid",
            "Invalid value: \"\": path in body should match '^.{2,}|[^./]$'",
        ),
    ]


def test_validating_an_application_is_fast(applications):
    app = an_application()
    applications.validate(app)
    started = time.perf_counter()
    for _ in range(200):
        applications.validate(app)
        applications.prune(app)
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 0.001

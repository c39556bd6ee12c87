from __future__ import annotations

import pytest
import yaml

from environments.argo_templates import (
    TemplateError,
    normalize,
    pull_request_params,
    render,
    slug_make,
    slugify,
)
from sandbox.kube_validation import label_errors, subdomain_errors
from sandbox.reference import reference_path

# The project's shared reference material lives beside the repository.
SEED = reference_path("seed/applicationsets.yaml", "applicationsets.yaml")
SHA = "0123456789abcdef0123456789abcdef01234567"


def params(branch: str = "feature/Foo_bar", go_template: bool = False, **extra) -> dict:
    return (
        pull_request_params(
            number=42,
            branch=branch,
            target_branch="main",
            head_sha=SHA,
            author="alice",
            title="Add foo",
            labels=["preview", "vcluster"],
            go_template=go_template,
        )
        | extra
    )


# --- slugify ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "slug"),
    [
        ("feature/Foo_bar.v2", "feature-foo-bar-v2"),  # FACTS §7.2
        ("fix&test", "fixandtest"),  # FACTS §7.2
        ("main", "main"),
        ("user@host", "userathost"),
        ('it\'s "quoted"', "its-quoted"),
        ("em\u2014dash\u2013en", "em-dash-en"),
        ("--leading-and-trailing--", "leading-and-trailing"),
        ("__under__score__", "under-score"),
        ("  spaced out  ", "spaced-out"),
        ("a//b..c", "a-b-c"),
        ("Über straße", "uber-strasse"),
        ("ñandú-çà-ø-æ-ł", "nandu-ca-o-ae-l"),
        ("Ελληνικά", "ellenika"),
        ("Привет мир", "privet-mir"),
        ("!!!///", ""),
        ("***", ""),
        ("", ""),
    ],
)
def test_slugify_matches_gosimple_slug(branch, slug):
    assert slugify(branch) == slug


def test_slugify_cuts_long_names_at_the_last_dash():
    words = "-".join(["word"] * 60)  # 299 characters
    slug = slugify(words)
    assert slug == "-".join(["word"] * 10)  # 49 characters: the next dash is past index 50
    assert len(slugify("x" * 49 + "-yy")) == 49
    assert slugify("abcd-" * 10 + "z") == "abcd-" * 9 + "abcd"  # '-' exactly at index 50 is cut


def test_slugify_hard_cuts_a_single_long_word():
    assert slugify("a" * 300) == "a" * 50


def test_slugify_results_are_dns_labels_when_not_empty():
    for branch in ["feature/" + "x" * 300, "Release/2024.01_hotfix", "dependabot/npm/@types/node"]:
        slug = slugify(branch)
        assert slug and label_errors(slug) == [] and len(slug) <= 50


def test_slug_make_without_smart_truncation_hard_cuts_first():
    assert slug_make("abc-def-ghi", 5, smart_truncate=False) == "abc-d"
    assert slug_make("abc-def", 4, smart_truncate=False) == "abc"
    assert slug_make("abc", 0, smart_truncate=False) == ""
    assert slug_make("abc-def", 0) == "abc-def"


def test_normalize_is_argo_cd_sanitize_name():
    assert normalize("Feature/Foo_bar.v2") == "feature-foo-bar.v2"
    assert normalize("..x..") == "x"
    assert len(normalize("a" * 300)) == 253


# --- parameters ------------------------------------------------------------------------------


def test_pull_request_params_without_go_template():
    assert params() == {
        "number": "42",
        "title": "Add foo",
        "branch": "feature/Foo_bar",
        "branch_slug": "feature-foo-bar",
        "target_branch": "main",
        "target_branch_slug": "main",
        "head_sha": SHA,
        "head_short_sha": "01234567",
        "head_short_sha_7": "0123456",
        "author": "alice",
    }


def test_labels_are_only_given_to_go_templates():
    assert params(go_template=True)["labels"] == ["preview", "vcluster"]


def test_short_shas_of_a_short_sha():
    short = pull_request_params(1, "b", "main", "abc", "a", "t", [], False)
    assert short["head_short_sha"] == short["head_short_sha_7"] == "abc"


# --- fasttemplate ----------------------------------------------------------------------------


def test_fasttemplate_replaces_known_string_keys():
    rendered = render("sampleapp-{{branch_slug}}-{{ number }}", params(), go_template=False)
    assert rendered == "sampleapp-feature-foo-bar-42"


def test_fasttemplate_leaves_unknown_and_non_string_keys_alone():
    p = params(go_template=True)
    assert render("{{unknown}}/{{labels}}/{{ }}/{{.branch}}", p, False) == (
        "{{unknown}}/{{labels}}/{{ }}/{{.branch}}"
    )


def test_fasttemplate_rejects_an_unclosed_tag_only_when_another_is_closed():
    assert render("{{branch", params(), False) == "{{branch"
    with pytest.raises(TemplateError, match="Cannot find end tag"):
        render("{{number}}-{{branch", params(), False)


def test_render_walks_nested_templates_and_keys():
    template = {
        "metadata": {"name": "app-{{number}}", "labels": {"pr-{{number}}": "{{author}}"}},
        "spec": {"replicas": 2, "enabled": True, "skip": None, "list": ["{{head_short_sha}}"]},
    }
    assert render(template, params(), False) == {
        "metadata": {"name": "app-42", "labels": {"pr-42": "alice"}},
        "spec": {"replicas": 2, "enabled": True, "list": ["01234567"]},
    }


def test_the_seed_applicationsets_render_invalid_names_from_raw_branches():
    docs = [d for d in yaml.safe_load_all(SEED.read_text()) if d]
    rendered = render(docs[1]["spec"]["template"], params(), False)
    assert rendered["metadata"]["name"] == "cluster-feature/Foo_bar-42"
    assert subdomain_errors(rendered["metadata"]["name"]) != []
    assert rendered["spec"]["destination"]["namespace"] == "cluster-feature/Foo_bar-42-namespace"
    ok = render(docs[1]["spec"]["template"], params(branch="fix-1"), False)
    assert ok["metadata"]["name"] == "cluster-fix-1-42"
    assert ok["spec"]["source"]["helm"]["parameters"][1]["value"] == (
        "--tls-san=cluster-fix-1-42.cluster-fix-1-42-namespace.svc.cluster.local"
    )


# --- Go templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.number}}", "42"),
        ("{{ .branch_slug }}-{{ .head_short_sha_7 }}", "feature-foo-bar-0123456"),
        ("{{.branch | lower}}", "feature/foo_bar"),
        ("{{ .branch | upper }}", "FEATURE/FOO_BAR"),
        ("{{ .branch_slug | trunc 7 }}", "feature"),
        ("{{ trunc -3 .branch_slug }}", "bar"),
        ('{{ replace "/" "-" .branch }}', "feature-Foo_bar"),
        ('{{ .branch | replace "_" "-" | lower }}', "feature/foo-bar"),
        ('{{ .branch | trimPrefix "feature/" }}', "Foo_bar"),
        ('{{ .title | trimSuffix " foo" }}', "Add"),
        ('{{ default "none" .missing }}', "none"),
        ('{{ .author | default "none" }}', "alice"),
        ("{{ .author | quote }}", '"alice"'),
        ("{{ slugify .branch }}", "feature-foo-bar"),
        ("{{ slugify 7 .branch }}", "feature"),
        ("{{ .title | slugify 5 false }}", "add-f"),
        ("{{ normalize .branch }}", "feature-foo-bar"),
        ('{{ printf "%s-%d" .branch_slug 7 }}', "feature-foo-bar-7"),
        ('{{ printf "pr-%s" .number }}', "pr-42"),
        ('{{ printf "%d" .number }}', "%!d(string=42)"),
        ("{{ index .labels 1 }}", "vcluster"),
        ('{{ join "," .labels }}', "preview,vcluster"),
        ("{{ .labels }}", "[preview vcluster]"),
        ("{{ (index .labels 0) | upper }}", "PREVIEW"),
        ("{{ .values.env }}", "dev"),
        ("a {{- .number -}} b", "a42b"),
        ("{{/* a comment */}}x", "x"),
        ("plain text", "plain text"),
    ],
)
def test_go_templates(template, expected):
    p = params(go_template=True, values={"env": "dev"})
    assert render(template, p, go_template=True) == expected


def test_a_missing_key_renders_no_value_by_default():
    assert render("{{ .missing }}", params(), True) == "<no value>"
    assert render("{{ .missing }}", params(), True, ["missingkey=zero"]) == "<no value>"


def test_missingkey_error_fails_on_unknown_keys():
    with pytest.raises(TemplateError) as info:
        render("name-{{ .nope }}", params(), True, ["missingkey=error"])
    assert str(info.value) == (
        "failed to execute go template name-{{ .nope }}: template: :1:8: "
        'executing "" at <.nope>: map has no entry for key "nope"'
    )
    assert render("{{ .number }}", params(), True, ["missingkey=error"]) == "42"


def test_an_unknown_template_option_is_an_error():
    with pytest.raises(TemplateError, match="unrecognized option"):
        render("x", params(), True, ["frobnicate"])


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ if .number }}x{{ end }}", "does not support {{if}}"),
        ("{{ range .labels }}x{{ end }}", "does not support {{range}}"),
        ("{{ $x := 1 }}", "template variables"),
        ("{{ sha256sum .branch }}", 'function "sha256sum" not defined'),
        ("{{ .branch", "unclosed action"),
        ("{{ }}", "missing value for command"),
        ('{{ "unterminated }}', "unterminated quoted string"),
        ("{{ lower 5 }}", "wrong type for value; expected string; got int"),
        ("{{ lower .missing }}", "invalid value; expected string"),
        ("{{ index .labels 9 }}", "index out of range: 9"),
        ("{{ .branch.x }}", "can't evaluate field x in type string"),
        ("{{ .missing.x }}", "nil pointer evaluating interface {}.x"),
        ("{{ .number .branch }}", "can't give argument to non-function .number"),
        ('{{ slugify "x" .branch }}', "interface {} is string, not int"),
    ],
)
def test_unsupported_or_broken_go_templates_raise(template, message):
    with pytest.raises(TemplateError) as info:
        render(template, params(go_template=True), True)
    assert message in str(info.value)

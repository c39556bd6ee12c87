from __future__ import annotations

import pytest

from sandbox.selectors import parse_field_selector, parse_label_selector

CLUSTER = {"argocd.argoproj.io/secret-type": "cluster", "env": "pr", "tier": "web"}


def matches(selector: str, labels: dict[str, str]) -> bool:
    return parse_label_selector(selector)(labels)


def test_an_empty_selector_matches_everything():
    assert matches("", {})
    assert matches("  ", CLUSTER)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("argocd.argoproj.io/secret-type=cluster", True),
        ("argocd.argoproj.io/secret-type==cluster", True),
        ("argocd.argoproj.io/secret-type!=cluster", False),
        ("env=pr,tier=web", True),
        ("env = pr , tier = db", False),
        ("env in (pr, qa)", True),
        ("env in (qa)", False),
        ("env notin (qa,prod)", True),
        ("env notin (pr)", False),
        ("env", True),
        ("!env", False),
        ("missing", False),
        ("!missing", True),
        ("missing!=x", True),
        ("missing notin (x)", True),
        ("missing in (x)", False),
        ("missing=", False),
        ("env,!missing,tier in (web)", True),
    ],
)
def test_label_requirements(selector, expected):
    assert matches(selector, CLUSTER) is expected


def test_an_empty_value_matches_an_empty_label():
    assert matches("a=", {"a": ""})
    assert matches("a in (,x)", {"a": ""})


def test_in_and_notin_can_be_values():
    assert matches("x in (in,notin)", {"x": "notin"})


def test_numeric_comparisons():
    assert matches("pr>5", {"pr": "7"})
    assert not matches("pr<5", {"pr": "7"})
    assert not matches("pr>5", {"pr": "seven"})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            "env pr",
            "unable to parse requirement: found 'pr', expected: '=', '!=', '==', 'in', notin'",
        ),
        ("env in pr", "unable to parse requirement: found 'pr' expected: '('"),
        ("env in (pr", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("=pr", "found '=', expected: !, identifier, or 'end of string'"),
        ("env,", "found '', expected: identifier after ','"),
        ("env=a=b", "found '=', expected: ',' or 'end of string'"),
        (
            "a$b=c",
            'unable to parse requirement: <nil>: Invalid value: "a$b": name part must consist '
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            "env=bad value!",
            "found 'value', expected: ',' or 'end of string'",
        ),
        (
            "env=-pr",
            'unable to parse requirement: values[0][env]: Invalid value: "-pr": a valid label '
            "must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
            "or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
        (
            "pr>x",
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' "
            "operators, the value must be an integer",
        ),
    ],
)
def test_bad_label_selectors_raise_the_api_server_message(selector, message):
    with pytest.raises(ValueError) as info:
        parse_label_selector(selector)
    assert str(info.value) == message


def test_a_key_with_too_many_slashes_is_rejected():
    with pytest.raises(ValueError, match="with an optional DNS subdomain prefix"):
        parse_label_selector("a/b/c")


# --- field selectors -------------------------------------------------------------------------

SECRET = {"metadata": {"name": "cluster-x", "namespace": "argocd"}, "type": "Opaque"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("metadata.name=cluster-x", True),
        ("metadata.name==cluster-x", True),
        ("metadata.name!=cluster-x", False),
        ("metadata.namespace=argocd,metadata.name=cluster-x", True),
        ("metadata.namespace=default,metadata.name=cluster-x", False),
        ("type=Opaque", True),
        ("spec.missing!=x", True),
        ("spec.missing=", True),
        ("spec.missing=x", False),
    ],
)
def test_field_selectors(selector, expected):
    assert parse_field_selector(selector)(SECRET) is expected


def test_field_selector_values_can_escape_commas_and_equals():
    obj = {"metadata": {"name": "a,b=c"}}
    assert parse_field_selector(r"metadata.name=a\,b\=c")(obj)


def test_bad_field_selectors_raise():
    with pytest.raises(ValueError, match=r"invalid selector: 'metadata\.name'; can't understand"):
        parse_field_selector("metadata.name")
    with pytest.raises(ValueError, match="invalid escape sequence"):
        parse_field_selector(r"metadata.name=a\b")

"""Label and field selectors as the Kubernetes API server parses them.

Ports of apimachinery `pkg/labels/selector.go` (lexer, parser and `Requirement.Matches`, with its
error messages) and `pkg/fields/selector.go` (`ParseSelector`: terms split on unescaped `,`, each
`lhs=value`, `lhs==value` or `lhs!=value`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.kube_validation import go_quote, max_len_error, regex_error, subdomain_errors

# --- label selectors -----------------------------------------------------------------------

_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)

_SPECIAL = "=!(),><"
_WHITESPACE = " \t\r\n"
_OPERATOR_TOKENS = {"!", "!=", "=", "==", "(", ")", ",", ">", "<"}


def qualified_name_errors(value: str) -> list[str]:
    """apimachinery `IsQualifiedName`: label keys such as `argocd.argoproj.io/secret-type`."""
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + msg for msg in subdomain_errors(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part " + max_len_error(63))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(
            "name part "
            + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME, "MyName", "my.name", "123-abc")
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """apimachinery `IsValidLabelValue`."""
    errors = []
    if len(value) > 63:
        errors.append(max_len_error(63))
    if not re.fullmatch(_LABEL_VALUE, value):
        errors.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errors


def _lex(selector: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal); kind is "id", "end", "in", "notin" or the operator itself."""
    tokens: list[tuple[str, str]] = []
    pos, size = 0, len(selector)
    while True:
        while pos < size and selector[pos] in _WHITESPACE:
            pos += 1
        if pos >= size:
            tokens.append(("end", ""))
            return tokens
        if selector[pos] in _SPECIAL:
            # The longest run of special characters that is still an operator ("!=", "==").
            operator = selector[pos]
            pos += 1
            while pos < size and operator + selector[pos] in _OPERATOR_TOKENS:
                operator += selector[pos]
                pos += 1
            tokens.append((operator, operator))
            continue
        start = pos
        while pos < size and selector[pos] not in _SPECIAL and selector[pos] not in _WHITESPACE:
            pos += 1
        word = selector[start:pos]
        tokens.append((word if word in ("in", "notin") else "id", word))


@dataclass(frozen=True)
class Requirement:
    """One `key op values` term of a label selector."""

    key: str
    operator: str  # one of "in", "notin", "=", "==", "!=", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """apimachinery `Requirement.Matches`."""
        has = self.key in labels
        if self.operator in ("in", "=", "=="):
            return has and labels[self.key] in self.values
        if self.operator in ("notin", "!="):
            return not has or labels[self.key] not in self.values
        if self.operator == "exists":
            return has
        if self.operator == "!":
            return not has
        if not has:
            return False
        try:
            actual, wanted = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return actual > wanted if self.operator == ">" else actual < wanted


class _LabelParser:
    def __init__(self, selector: str) -> None:
        self.tokens = _lex(selector)
        self.position = 0

    def lookahead(self, values: bool = True) -> tuple[str, str]:
        kind, literal = self.tokens[self.position]
        if values and kind in ("in", "notin"):
            kind = "id"
        return kind, literal

    def consume(self, values: bool = True) -> tuple[str, str]:
        token = self.lookahead(values)
        self.position += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.lookahead()
            if kind == "end":
                return requirements
            if kind not in ("id", "!"):
                raise ValueError(f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except ValueError as exc:
                raise ValueError(f"unable to parse requirement: {exc}") from None
            kind, literal = self.consume()
            if kind == "end":
                return requirements
            if kind != ",":
                raise ValueError(f"found '{literal}', expected: ',' or 'end of string'")
            kind, literal = self.lookahead()
            if kind not in ("id", "!"):
                raise ValueError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        operator = ""
        kind, literal = self.consume()
        if kind == "!":
            operator = "!"
            kind, literal = self.consume()
        if kind != "id":
            raise ValueError(f"found '{literal}', expected: identifier")
        key = literal
        errors = qualified_name_errors(key)
        if errors:
            raise ValueError(f"<nil>: Invalid value: {go_quote(key)}: {'; '.join(errors)}")
        if self.lookahead()[0] in ("end", ","):
            return _new_requirement(key, operator or "exists", [])
        kind, literal = self.consume(values=False)
        if kind not in ("in", "notin", "=", "==", "!=", ">", "<"):
            raise ValueError(f"found '{literal}', expected: '=', '!=', '==', 'in', notin'")
        if kind in ("in", "notin"):
            return _new_requirement(key, kind, self.set_values())
        return _new_requirement(key, kind, self.exact_value())

    def set_values(self) -> list[str]:
        kind, literal = self.consume()
        if kind != "(":
            raise ValueError(f"found '{literal}' expected: '('")
        kind, literal = self.lookahead()
        if kind == ")":
            self.consume()
            return [""]
        if kind not in ("id", ","):
            raise ValueError(f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifiers()
        if self.consume()[0] != ")":
            raise ValueError(f"found '{literal}', expected: ')'")
        return values

    def identifiers(self) -> list[str]:
        values: list[str] = []
        while True:
            kind, literal = self.consume()
            if kind == "id":
                values.append(literal)
                next_kind, next_literal = self.lookahead()
                if next_kind == ")":
                    return values
                if next_kind != ",":
                    raise ValueError(f"found '{next_literal}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.append("")
                next_kind = self.lookahead()[0]
                if next_kind == ")":
                    values.append("")
                    return values
                if next_kind == ",":
                    self.consume()
                    values.append("")
            else:
                raise ValueError(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        if self.lookahead()[0] in ("end", ","):
            return [""]
        kind, literal = self.consume()
        if kind == "id":
            return [literal]
        raise ValueError(f"found '{literal}', expected: identifier")


def _new_requirement(key: str, operator: str, values: list[str]) -> Requirement:
    """apimachinery `NewRequirement`: checks the values (the key was checked by the parser)."""
    errors = []
    unique = sorted(set(values))
    if operator in (">", "<"):
        for i, value in enumerate(unique):
            if not re.fullmatch(r"[+-]?[0-9]+", value):
                errors.append(
                    f"values[{i}]: Invalid value: {go_quote(value)}: for 'Gt', 'Lt' operators, "
                    "the value must be an integer"
                )
    for i, value in enumerate(unique):
        value_errors = label_value_errors(value)
        if value_errors:
            errors.append(
                f"values[{i}][{key}]: Invalid value: {go_quote(value)}: {'; '.join(value_errors)}"
            )
    if len(errors) == 1:
        raise ValueError(errors[0])
    if errors:
        raise ValueError("[" + ", ".join(errors) + "]")
    return Requirement(key, operator, tuple(unique))


def parse_label_requirements(selector: str) -> list[Requirement]:
    """apimachinery `labels.Parse`, returning its requirements sorted by key."""
    requirements = _LabelParser(selector).parse()
    return sorted(requirements, key=lambda r: r.key)


def parse_label_selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate on an object's labels; `ValueError` (a 400 to the caller) if malformed."""
    requirements = parse_label_requirements(selector)

    def matches(labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in requirements)

    return matches


# --- field selectors -----------------------------------------------------------------------


def _split_terms(selector: str) -> list[str]:
    """apimachinery `splitTerms`: split on `,` not preceded by a backslash escape."""
    if not selector:
        return []
    terms, start, escaped = [], 0, False
    for i, char in enumerate(selector):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """apimachinery `splitTerm`: the first `!=`, `==` or `=` from the left."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape(value: str) -> str:
    """apimachinery `fields.UnescapeValue`."""
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    out, escaped = [], False
    for char in value:
        if escaped:
            if char not in "\\,=":
                raise ValueError(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            # Go prints the rune with %v, i.e. as a number.
            raise ValueError(f"invalid field selector: unescaped character in value: {ord(char)}")
        else:
            out.append(char)
    if escaped:
        raise ValueError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def field_value(obj: Mapping[str, Any], path: str) -> str | None:
    """The value at a dotted path as a field selector sees it; None when absent."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    if current is None:
        return None
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def parse_field_selector(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on a whole object, e.g. `metadata.name=foo,metadata.namespace!=bar`.

    A missing field compares as the empty string, so `x!=v` matches objects without `x`.
    """
    terms: list[tuple[str, bool, str]] = []
    for part in sorted(_split_terms(selector)):
        if part == "":
            continue
        split = _split_term(part)
        if split is None:
            raise ValueError(f"invalid selector: '{selector}'; can't understand '{part}'")
        lhs, op, rhs = split
        terms.append((lhs, op != "!=", _unescape(rhs)))

    def matches(obj: Mapping[str, Any]) -> bool:
        for path, equal, wanted in terms:
            actual = field_value(obj, path) or ""
            if (actual == wanted) != equal:
                return False
        return True

    return matches

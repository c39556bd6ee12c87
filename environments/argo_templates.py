"""What Argo CD's ApplicationSet controller does with a Pull Request generator's parameters.

- `slugify`: gosimple/slug v1.15.0 `Make`, configured as argo-cd
  `applicationset/generators/pull_request.go` does (`MaxLength = 50`, `CustomSub = {"_": "-"}`).
- `pull_request_params`: `PullRequestGenerator.GenerateParams`.
- `render`: `Render.RenderTemplateParams` / `Render.Replace` in argo-cd
  `applicationset/utils/utils.go`: fasttemplate `{{key}}` substitution, or with
  `spec.goTemplate: true` Go `text/template` with Sprig plus `normalize` and `slugify`.

The Go template support is a small hand-written subset: actions holding one pipeline of fields
(`.branch`, `.a.b`), constants, parenthesised pipelines and the functions in `_FUNCTIONS`.
Anything else (`if`, `range`, variables, other functions) raises `TemplateError`.
"""

# ruff: noqa: RUF001 - the transliteration table maps look-alike letters on purpose.
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def go_quote(value: str) -> str:
    """Go's `%q` for a string, close enough for error messages."""
    return json.dumps(value, ensure_ascii=False)


class TemplateError(ValueError):
    """A template that Argo CD would fail to parse or execute."""


# --- gosimple/slug ---------------------------------------------------------------------------

# unicode.IsSpace, which Go's strings.TrimSpace uses.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# slug's defaultSub merged into enSub: applied rune by rune before transliteration.
_EN_SUB = {
    "&": "and",
    "@": "at",
    '"': "",
    "'": "",
    "\u2019": "",  # right single quotation mark
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2015": "-",  # horizontal bar
}

# What gosimple/unidecode gives for characters that NFKD does not reduce to ASCII.
_TRANSLIT = {
    "ß": "ss", "ẞ": "Ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
    "ı": "i", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "ŋ": "ng", "Ŋ": "NG", "ĸ": "q",
    "ſ": "s", "ƒ": "f", "€": "EU", "£": "PS", "©": "(c)", "®": "(r)", "°": "deg", "×": "x",
    "÷": "/", "«": "<<", "»": ">>", "“": '"', "”": '"', "„": ",,", "‘": "'", "¿": "?", "¡": "!",
    # Greek
    "α": "a", "β": "b", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "e", "θ": "th",
    "ι": "i", "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p",
    "ρ": "r", "ς": "s", "σ": "s", "τ": "t", "υ": "u", "φ": "ph", "χ": "kh", "ψ": "ps",
    "ω": "o", "Α": "A", "Β": "B", "Γ": "G", "Δ": "D", "Ε": "E", "Ζ": "Z", "Η": "E",
    "Θ": "Th", "Ι": "I", "Κ": "K", "Λ": "L", "Μ": "M", "Ν": "N", "Ξ": "Ks", "Ο": "O",
    "Π": "P", "Ρ": "R", "Σ": "S", "Τ": "T", "Υ": "U", "Φ": "Ph", "Χ": "Kh", "Ψ": "Ps",
    "Ω": "O",
    # Cyrillic
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "io", "ж": "zh",
    "з": "z", "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "'", "ы": "y", "ь": "'", "э": "e", "ю": "iu",
    "я": "ia", "є": "ie", "і": "i", "ї": "yi", "ґ": "g", "ў": "u", "ђ": "d", "ј": "j",
    "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz",
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Е": "E", "Ё": "Io", "Ж": "Zh",
    "З": "Z", "И": "I", "Й": "I", "К": "K", "Л": "L", "М": "M", "Н": "N", "О": "O",
    "П": "P", "Р": "R", "С": "S", "Т": "T", "У": "U", "Ф": "F", "Х": "Kh", "Ц": "Ts",
    "Ч": "Ch", "Ш": "Sh", "Щ": "Shch", "Ъ": "'", "Ы": "Y", "Ь": "'", "Э": "E", "Ю": "Iu",
    "Я": "Ia", "Є": "Ie", "І": "I", "Ї": "Yi", "Ґ": "G", "Ў": "U", "Ђ": "D", "Ј": "J",
    "Љ": "Lj", "Њ": "Nj", "Ћ": "C", "Џ": "Dz",
}  # fmt: skip

_NON_AUTHORIZED = re.compile(r"[^a-zA-Z0-9\-_]")
_DASHES = re.compile(r"-+")


def unidecode(text: str) -> str:
    """An approximation of gosimple/unidecode: ASCII kept, Latin/Greek/Cyrillic transliterated,
    accents dropped (NFKD), anything else removed."""
    out = []
    for char in text:
        if char.isascii():
            out.append(char)
        elif char in _TRANSLIT:
            out.append(_TRANSLIT[char])
        else:
            for part in unicodedata.normalize("NFKD", char):
                if part.isascii():
                    out.append(part)
                else:
                    out.append(_TRANSLIT.get(part, ""))
    return "".join(out)


def _go_lower(text: str) -> str:
    """Go's strings.ToLower: one rune in, one rune out (Python turns 'İ' into two)."""
    return text.replace("İ", "i").lower()


def slug_make(text: str, max_length: int = 50, smart_truncate: bool = True) -> str:
    """gosimple/slug v1.15.0 `MakeLang(text, "en")` with Argo CD's `CustomSub = {"_": "-"}`."""
    slug = text.strip(_GO_SPACE)
    slug = slug.replace("_", "-")
    slug = "".join(_EN_SUB.get(char, char) for char in slug)
    slug = unidecode(slug)
    slug = _go_lower(slug)
    if not smart_truncate and len(slug) >= max_length:
        slug = slug[:max_length]
    slug = _NON_AUTHORIZED.sub("-", slug)
    slug = _DASHES.sub("-", slug)
    slug = slug.strip("-_")
    if max_length > 0 and smart_truncate and len(slug) > max_length:
        # Cut at the last '-' at or before max_length; a single long word is cut hard.
        cut = slug.rfind("-", 0, max_length + 1)
        slug = slug[:cut] if cut >= 0 else slug[:max_length]
    return slug


def slugify(text: str, max_length: int = 50) -> str:
    """`branch_slug` and `target_branch_slug`: `slug.Make` as the PR generator configures it."""
    return slug_make(text, max_length)


_INVALID_DNS_CHARS = re.compile(r"[^-a-z0-9.]")


def normalize(name: str) -> str:
    """argo-cd `utils.SanitizeName`, the `normalize` template function."""
    name = _INVALID_DNS_CHARS.sub("-", _go_lower(name))
    return name[:253].strip("-.")


def slugify_name(*args: Any) -> str:
    """argo-cd `utils.SlugifyName`, the `slugify [maxSize] [smartTruncate] name` function."""
    max_size, smart, name = 50, True, ""
    for i, arg in enumerate(args):
        if i == len(args) - 1:
            name = _expect(arg, str, "slugify")
        elif i == 0:
            max_size = _expect(arg, int, "slugify")
        elif i == 1:
            smart = _expect(arg, bool, "slugify")
    return slug_make(normalize(name), max_size, smart)


def _expect(value: Any, kind: type, function: str) -> Any:
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise TemplateError(
            f"error calling {function}: interface conversion: interface {{}} is "
            f"{_go_type(value)}, not {_go_type_name(kind)}"
        )
    return value


# --- Pull Request generator ------------------------------------------------------------------


def pull_request_params(
    number: int,
    branch: str,
    target_branch: str,
    head_sha: str,
    author: str,
    title: str,
    labels: Sequence[str],
    go_template: bool,
) -> dict[str, Any]:
    """The parameters of one pull request (`PullRequestGenerator.GenerateParams`).

    `number` is a string, and `labels` is only there for Go-template ApplicationSets.
    """
    params: dict[str, Any] = {
        "number": str(number),
        "title": title,
        "branch": branch,
        "branch_slug": slugify(branch),
        "target_branch": target_branch,
        "target_branch_slug": slugify(target_branch),
        "head_sha": head_sha,
        "head_short_sha": head_sha[:8],
        "head_short_sha_7": head_sha[:7],
        "author": author,
    }
    if go_template:
        params["labels"] = list(labels)
    return params


# --- rendering -------------------------------------------------------------------------------


def render(
    template: Any,
    params: Mapping[str, Any],
    go_template: bool,
    go_template_options: Sequence[str] = (),
) -> Any:
    """Every string (and mapping key) of a nested template rendered with `params`.

    As `deeplyReplace` does, `None` values inside mappings are dropped; other scalars are kept.
    """
    missing_key_error = _missing_key_error(go_template_options) if go_template else False

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            if go_template:
                return _render_go(value, params, missing_key_error)
            return _render_fast(value, params)
        if isinstance(value, Mapping):
            return {walk(k): walk(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(template)


def _missing_key_error(options: Sequence[str]) -> bool:
    """text/template `Option`: only `missingkey=...` exists; Go panics on anything else."""
    error = False
    for option in options:
        if option in ("missingkey=default", "missingkey=invalid", "missingkey=zero"):
            error = False
        elif option == "missingkey=error":
            error = True
        else:
            raise TemplateError(f"unrecognized option: {option}")
    return error


_IS_TEMPLATED = re.compile(r"{{.*}}")


def _render_fast(text: str, params: Mapping[str, Any]) -> str:
    """`Replace` without Go templates: valyala/fasttemplate with `{{` `}}` tags.

    Tags are trimmed of whitespace; unknown keys and non-string values stay as written.
    """
    if not _IS_TEMPLATED.search(text):
        return text
    out, pos = [], 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError(
                f"invalid template: Cannot find end tag={go_quote('}}')} in the "
                f"template={go_quote(text)} starting from {go_quote(text[start + 2 :])}"
            )
        out.append(text[pos:start])
        tag = text[start + 2 : end]
        value = params.get(tag.strip())
        out.append(value if tag.strip() and isinstance(value, str) else "{{" + tag + "}}")
        pos = end + 2


# --- the Go template subset ------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    names: tuple[str, ...]  # () is the dot itself
    pos: int

    def __str__(self) -> str:
        return "." + ".".join(self.names)


@dataclass(frozen=True)
class _Const:
    value: Any


@dataclass(frozen=True)
class _Call:
    name: str
    pos: int


@dataclass(frozen=True)
class _Pipe:
    commands: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # "field", "const", "ident", "|", "(", ")", "end"
    value: Any
    pos: int


_UNSUPPORTED_KEYWORDS = {
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
}  # fmt: skip
_ACTION_SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD = re.compile(r"(\.[A-Za-z_][A-Za-z0-9_]*)+")
_NUMBER = re.compile(
    r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*(\.[0-9]*)?([eE][+-]?[0-9]+)?)"
)
_STRING_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'",
    "a": "\a", "b": "\b", "f": "\f", "v": "\v",
}  # fmt: skip


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1)


def _parse_error(text: str, pos: int, message: str) -> TemplateError:
    line, _ = _line_col(text, pos)
    return TemplateError(f"failed to parse template {text}: template: :{line}: {message}")


def _lex_string(text: str, pos: int) -> tuple[str, int]:
    """A Go interpreted string literal starting at `pos` (the opening quote)."""
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\n":
            break
        if char == "\\":
            escape = text[i + 1 : i + 2]
            if escape in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[escape])
                i += 2
                continue
            if escape in ("u", "x"):
                size = 4 if escape == "u" else 2
                digits = text[i + 2 : i + 2 + size]
                if len(digits) == size and all(c in "0123456789abcdefABCDEF" for c in digits):
                    out.append(chr(int(digits, 16)))
                    i += 2 + size
                    continue
            raise _parse_error(text, pos, "unquote: invalid syntax")
        out.append(char)
        i += 1
    raise _parse_error(text, pos, "unterminated quoted string")


def _lex_action(text: str, pos: int) -> tuple[list[_Token], int, bool]:
    """Tokens of the action starting at `pos` (after `{{`), the index after its `}}`, and
    whether it ended with the `-}}` trim marker."""
    tokens: list[_Token] = []
    i = pos
    while True:
        start = i
        while i < len(text) and text[i] in _ACTION_SPACE:
            i += 1
        if i >= len(text):
            raise _parse_error(text, pos, "unclosed action")
        if text.startswith("-}}", i) and i > start:
            tokens.append(_Token("end", None, i))
            return tokens, i + 3, True
        if text.startswith("}}", i):
            tokens.append(_Token("end", None, i))
            return tokens, i + 2, False
        char = text[i]
        if char in "|()":
            tokens.append(_Token(char, char, i))
            i += 1
        elif char == '"':
            value, end = _lex_string(text, i)
            tokens.append(_Token("const", value, i))
            i = end
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _parse_error(text, i, "unterminated raw quoted string")
            tokens.append(_Token("const", text[i + 1 : end], i))
            i = end + 1
        elif char == "." and (m := _FIELD.match(text, i)):
            tokens.append(_Token("field", tuple(m.group(0)[1:].split(".")), i))
            i = m.end()
        elif char == ".":
            tokens.append(_Token("field", (), i))
            i += 1
        elif (m := _NUMBER.match(text, i)) and (char.isdigit() or text[i + 1 : i + 2].isdigit()):
            literal = m.group(0).replace("_", "")
            try:
                number: int | float = int(literal, 0)
            except ValueError:
                number = float(literal)
            tokens.append(_Token("const", number, i))
            i = m.end()
        elif m := _IDENT.match(text, i):
            word = m.group(0)
            if word in ("true", "false"):
                tokens.append(_Token("const", word == "true", i))
            elif word == "nil":
                tokens.append(_Token("const", None, i))
            elif word in _UNSUPPORTED_KEYWORDS:
                raise TemplateError(
                    f"failed to parse template {text}: the sandbox does not support "
                    f"{{{{{word}}}}} actions"
                )
            elif word not in _FUNCTIONS:
                raise _parse_error(text, i, f'function "{word}" not defined (or not emulated)')
            else:
                tokens.append(_Token("ident", word, i))
            i = m.end()
        elif char == "$":
            raise TemplateError(
                f"failed to parse template {text}: the sandbox does not support template variables"
            )
        else:
            raise _parse_error(text, i, f"unexpected {go_quote(char)} in command")


def _parse_pipe(text: str, tokens: list[_Token], i: int) -> tuple[_Pipe, int]:
    commands: list[tuple[Any, ...]] = []
    command: list[Any] = []
    while True:
        token = tokens[i]
        if token.kind in ("end", ")"):
            break
        if token.kind == "|":
            if not command:
                raise _parse_error(text, token.pos, "missing command")
            commands.append(tuple(command))
            command = []
            i += 1
        elif token.kind == "(":
            sub, i = _parse_pipe(text, tokens, i + 1)
            if tokens[i].kind != ")":
                raise _parse_error(text, token.pos, "unclosed left paren")
            command.append(sub)
            i += 1
        elif token.kind == "field":
            command.append(_Field(token.value, token.pos))
            i += 1
        elif token.kind == "ident":
            command.append(_Call(token.value, token.pos))
            i += 1
        else:
            command.append(_Const(token.value))
            i += 1
    if not command:
        raise _parse_error(text, tokens[i].pos, "missing value for command")
    commands.append(tuple(command))
    return _Pipe(tuple(commands)), i


def _parse(text: str) -> list[str | _Pipe]:
    """The template as text pieces and pipelines, honouring `{{-`/`-}}` and `{{/* */}}`."""
    parts: list[str | _Pipe] = []
    pos, trim_next = 0, False
    while True:
        start = text.find("{{", pos)
        piece = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            piece = piece.lstrip(_ACTION_SPACE)
        if start < 0:
            parts.append(piece)
            return parts
        i = start + 2
        if text.startswith("-", i) and text[i + 1 : i + 2] and text[i + 1] in _ACTION_SPACE:
            piece = piece.rstrip(_ACTION_SPACE)
            i += 2
        parts.append(piece)
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise _parse_error(text, i, "unclosed comment")
            i = close + 2
            if text.startswith(" -}}", i):
                pos, trim_next = i + 4, True
            elif text.startswith("}}", i):
                pos, trim_next = i + 2, False
            else:
                raise _parse_error(text, i, "comment ends before closing delimiter")
            continue
        tokens, pos, trim_next = _lex_action(text, i)
        pipe, end = _parse_pipe(text, tokens, 0)
        if tokens[end].kind != "end":
            raise _parse_error(text, tokens[end].pos, "unexpected right paren")
        parts.append(pipe)


@dataclass
class _Run:
    text: str
    params: Mapping[str, Any]
    missing_key_error: bool

    def fail(self, pos: int, at: str, message: str) -> TemplateError:
        line, col = _line_col(self.text, pos)
        return TemplateError(
            f"failed to execute go template {self.text}: template: :{line}:{col}: "
            f'executing "" at <{at}>: {message}'
        )

    def pipe(self, pipe: _Pipe) -> Any:
        value: Any = _NOTHING
        for command in pipe.commands:
            value = self.command(command, value)
        return value

    def command(self, command: tuple[Any, ...], piped: Any) -> Any:
        first = command[0]
        if isinstance(first, _Call):
            args = [self.arg(a) for a in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return _FUNCTIONS[first.name](*args)
            except TemplateError as exc:
                raise self.fail(first.pos, first.name, str(exc)) from None
            except TypeError:
                raise self.fail(
                    first.pos, first.name, f"wrong number of args for {first.name}"
                ) from None
        if len(command) > 1 or piped is not _NOTHING:
            shown = str(first) if isinstance(first, _Field) else "a constant"
            raise TemplateError(
                f"failed to execute go template {self.text}: can't give argument to "
                f"non-function {shown}"
            )
        return self.arg(first)

    def arg(self, node: Any) -> Any:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Pipe):
            return self.pipe(node)
        if isinstance(node, _Call):
            return self.command((node,), _NOTHING)
        return self.field(node)

    def field(self, node: _Field) -> Any:
        value: Any = self.params
        for name in node.names:
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self.missing_key_error:
                    raise self.fail(node.pos, str(node), f'map has no entry for key "{name}"')
                else:
                    value = None
            elif value is None:
                raise self.fail(
                    node.pos, str(node), f"nil pointer evaluating interface {{}}.{name}"
                )
            else:
                raise self.fail(
                    node.pos,
                    str(node),
                    f"can't evaluate field {name} in type {_go_type(value)}",
                )
        return value


_NOTHING = object()  # no value piped into a command


def _render_go(text: str, params: Mapping[str, Any], missing_key_error: bool) -> str:
    """`Replace` with Go templates: parse, then execute against `params`."""
    run = _Run(text, params, missing_key_error)
    out = []
    for part in _parse(text):
        if isinstance(part, str):
            out.append(part)
        else:
            value = run.pipe(part)
            out.append("<no value>" if value is None else go_format(value))
    return "".join(out)


# --- Go values and the template functions ----------------------------------------------------


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return type(value).__name__


def _go_type_name(kind: type) -> str:
    return {str: "string", int: "int", bool: "bool"}.get(kind, kind.__name__)


def go_format(value: Any) -> str:
    """Go's `%v` (fmt.Sprint) for the JSON-like values templates see."""
    if value is None:
        return "<nil>"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return "map[" + " ".join(f"{k}:{go_format(v)}" for k, v in items) + "]"
    return str(value)


def _string(value: Any) -> str:
    """A `string` parameter of a Go function: anything else is a type error."""
    if isinstance(value, str):
        return value
    if value is None:
        raise TemplateError("invalid value; expected string")
    raise TemplateError(f"wrong type for value; expected string; got {_go_type(value)}")


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if value is None:
        raise TemplateError("invalid value; expected int")
    raise TemplateError(f"wrong type for value; expected int; got {_go_type(value)}")


def _empty(value: Any) -> bool:
    """Sprig `empty`."""
    if value is None:
        return True
    if isinstance(value, str | list | dict | tuple):
        return len(value) == 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return False


def _trunc(count: Any, text: Any) -> str:
    count, text = _int(count), _string(text)
    if count < 0 and len(text) + count > 0:
        return text[len(text) + count :]
    if count >= 0 and len(text) > count:
        return text[:count]
    return text


def _default(default: Any, *given: Any) -> Any:
    if not given or _empty(given[0]):
        return default
    return given[0]


def _quote(*values: Any) -> str:
    return " ".join(go_quote(go_format(v)) for v in values if v is not None)


def _index(item: Any, *indices: Any) -> Any:
    for index in indices:
        if isinstance(item, list):
            i = _int(index)
            if not 0 <= i < len(item):
                raise TemplateError(f"error calling index: index out of range: {i}")
            item = item[i]
        elif isinstance(item, Mapping):
            item = item.get(_string(index))
        elif item is None:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {_go_type(item)}")
    return item


def _join(separator: Any, values: Any) -> str:
    separator = _string(separator)
    if isinstance(values, list):
        return separator.join(go_format(v) for v in values if v is not None)
    return "" if values is None else go_format(values)


def _printf(form: Any, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs %s, %d, %v, %q and %%."""
    form = _string(form)
    out: list[str] = []
    i, used = 0, 0
    while i < len(form):
        char = form[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(form):
            out.append("%!(NOVERB)")
            break
        verb = form[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        if verb not in "sdvq":
            raise TemplateError(f"error calling printf: the sandbox does not emulate %{verb}")
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        out.append(_format_verb(verb, arg))
    if used < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_format(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_verb(verb: str, arg: Any) -> str:
    if verb == "v":
        return go_format(arg)
    if verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
        return str(arg)
    if verb == "s" and isinstance(arg, str | list):
        return go_format(arg)
    if verb == "q" and isinstance(arg, str):
        return go_quote(arg)
    if arg is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(arg)}={go_format(arg)})"


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": lambda s: _go_lower(_string(s)),
    "upper": lambda s: _string(s).upper(),
    "trim": lambda s: _string(s).strip(_GO_SPACE),
    "trunc": _trunc,
    "replace": lambda old, new, src: _string(src).replace(_string(old), _string(new)),
    "trimSuffix": lambda suffix, s: _string(s).removesuffix(_string(suffix)),
    "trimPrefix": lambda prefix, s: _string(s).removeprefix(_string(prefix)),
    "default": _default,
    "quote": _quote,
    "printf": _printf,
    "index": _index,
    "join": _join,
    "slugify": slugify_name,
    "normalize": lambda s: normalize(_string(s)),
}

"""The runs-table filter language: tokenizer, recursive-descent parser, compiler to Q objects.

The text comes straight from a URL, so nothing of it ever becomes an ORM keyword name: fields
are matched against an allow-list (ALLOWED_FIELDS, params.<key>, metrics.<key>.<agg>) and
compiled to hand-written lookups; param and metric keys are only ever *values* in
`key = <literal>` conditions. Input length, nesting depth and the number of comparisons are
bounded so a hostile filter costs a parse error, not a slow query.

Grammar (EBNF):

    expr       = or_expr ;
    or_expr    = and_expr , { "or" , and_expr } ;
    and_expr   = unary , { "and" , unary } ;
    unary      = "not" , unary | primary ;
    primary    = "(" , expr , ")" | comparison ;
    comparison = field , op , literal | field , "contains" , literal ;
    op         = "=" | "!=" | "<" | "<=" | ">" | ">=" | "~" ;
    field      = ident | ident , "[" , string , "]" , [ "." , agg ] ;
    ident      = letter_or_underscore , { letter | digit | "_" | "." | "/" | ":" | "-" } ;
    literal    = number | string | "true" | "false" | "null" ;
    string     = '"' , { char | '\\"' | "\\\\" } , '"' | "'" , { char } , "'" ;

Fields: name, status, tags, created_by, created_at, id, source, params.<key>,
metrics.<key>.<agg> with agg in last|min|max|count|first_step|last_step. Keys with spaces or
other characters go in brackets: params["batch size"], metrics["val acc"].max.
Semantics: a comparison on a param or metric the run does not have is false (so `!=` does
not match runs without the param; `not (params.x = 1)` does).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ..models import Param, ParamType, RunStatus, Series
from ..services.errors import ServiceError

MAX_LENGTH = 2000
MAX_DEPTH = 20
MAX_COMPARISONS = 50

METRIC_AGGS = {
    "last": "last_value",
    "min": "min_value",
    "max": "max_value",
    "count": "count",
    "first_step": "first_step",
    "last_step": "last_step",
}
# Plain run columns: name in the language -> (ORM path, kind). The ORM paths are constants.
RUN_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("id", "number"),
    "name": ("name", "string"),
    "status": ("status", "string"),
    "source": ("source", "string"),
    "created_by": ("created_by__username", "string"),
    "created_at": ("created_at", "datetime"),
    "tags": ("tags", "tags"),
}
ALLOWED_FIELDS = sorted([*RUN_FIELDS, "params.<key>", "metrics.<key>.<agg>"])
_OP_LOOKUP = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_INT64 = 2**63 - 1
INT_METRIC_AGGS = {"count", "first_step", "last_step"}


class FilterError(ServiceError):
    code = "invalid_filter"

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})", field="filter", position=position)
        self.position = position


# --- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, string, op, lparen, rparen, lbracket, rbracket, dot, kw, end
    value: Any
    pos: int


KEYWORDS = {"and", "or", "not", "contains", "true", "false", "null"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_./:\-]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPS = ("!=", "<=", ">=", "=", "<", ">", "~")


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FilterError(f"Filter is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if "\x00" in text:
        raise FilterError("Filter contains a NUL character", text.index("\x00"))
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()[]":
            kind = {"(": "lparen", ")": "rparen", "[": "lbracket", "]": "rbracket"}[c]
            tokens.append(Token(kind, c, i))
            i += 1
            continue
        if c == "." and tokens and tokens[-1].kind == "rbracket":
            tokens.append(Token("dot", c, i))
            i += 1
            continue
        if c in "\"'":
            value, i = _read_string(text, i)
            tokens.append(Token("string", value, i))
            continue
        if text.startswith("==", i):  # forgive the programmer's equality
            tokens.append(Token("op", "=", i))
            i += 2
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        m = _NUMBER.match(text, i)
        if m and (c.isdigit() or c in "-."):
            raw = m.group()
            num: float | int = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            if isinstance(num, int) and not -_INT64 <= num <= _INT64:
                num = float(num)  # compared as a float, never sent as an oversized bigint
            if isinstance(num, float) and not math.isfinite(num):
                raise FilterError("Number out of range", i)
            tokens.append(Token("number", num, i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            word = m.group()
            if word.lower() in KEYWORDS:
                tokens.append(Token("kw", word.lower(), i))
            else:
                tokens.append(Token("ident", word, i))
            i = m.end()
            continue
        raise FilterError(f"Unexpected character {c!r}", i)
    tokens.append(Token("end", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise FilterError("Unterminated string", start)


# --- AST --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A resolved column: kind is run|param|metric; name is the run field, param or metric key."""

    kind: str
    name: str
    agg: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "param":
            return f"params.{self.name}"
        if self.kind == "metric":
            return f"metrics.{self.name}.{self.agg}"
        return self.name


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str  # = != < <= > >= ~ contains
    value: Any
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | And | Or | Not


def resolve_field(
    name: str, pos: int, bracket_key: str | None = None, agg: str | None = None
) -> Field:
    """Map a column name to a Field, or raise FilterError naming what is allowed."""
    if bracket_key is not None:
        if name == "params":
            if agg is not None:
                raise FilterError("params[...] takes no aggregate", pos)
            return Field("param", _check_key(bracket_key, pos))
        if name == "metrics":
            if agg is None:
                raise FilterError(_agg_hint(bracket_key), pos)
            if agg not in METRIC_AGGS:
                raise FilterError(f"Unknown aggregate {agg!r}; use one of {_aggs()}", pos)
            return Field("metric", _check_key(bracket_key, pos), agg)
        raise FilterError(f"Only params[...] and metrics[...] take a key, not {name!r}", pos)
    if name in RUN_FIELDS:
        return Field("run", name)
    if name.startswith("params."):
        return Field("param", _check_key(name[len("params.") :], pos))
    if name.startswith("metrics."):
        rest = name[len("metrics.") :]
        key, dot, agg_name = rest.rpartition(".")
        if not dot or agg_name not in METRIC_AGGS:
            raise FilterError(_agg_hint(rest), pos)
        return Field("metric", _check_key(key, pos), agg_name)
    raise FilterError(f"Unknown field {name[:100]!r}; use one of {', '.join(ALLOWED_FIELDS)}", pos)


def _aggs() -> str:
    return ", ".join(METRIC_AGGS)


def _agg_hint(key: str) -> str:
    return f"Metric columns need an aggregate, e.g. metrics.{key[:100]}.last (one of {_aggs()})"


def _check_key(key: str, pos: int) -> str:
    if not 0 < len(key) <= 255:
        raise FilterError("Keys are 1-255 characters", pos)
    return key


def parse_column(text: str) -> Field:
    """Parse one column name (as used by sort= and columns=) with the filter tokenizer."""
    parser = _Parser(tokenize(text))
    field = parser.field()
    parser.expect("end")
    return field


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.comparisons = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, kind: str, value: Any = None) -> Token:
        t = self.tok
        if t.kind != kind or (value is not None and t.value != value):
            names = {"rparen": "')'", "rbracket": "']'", "string": "a quoted string"}
            want = repr(value) if value is not None else names.get(kind, kind)
            raise FilterError(f"Expected {want}, found {self._describe(t)}", t.pos)
        return self.advance()

    @staticmethod
    def _describe(t: Token) -> str:
        if t.kind == "end":
            return "end of filter"
        return f"{t.value!r}"

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise FilterError("Empty filter", 0)
        node = self.or_expr(0)
        if self.tok.kind != "end":
            raise FilterError(f"Unexpected {self._describe(self.tok)}", self.tok.pos)
        return node

    def _depth(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FilterError(f"Filter nests deeper than {MAX_DEPTH} levels", self.tok.pos)

    def or_expr(self, depth: int) -> Node:
        self._depth(depth)
        items = [self.and_expr(depth + 1)]
        while self.tok.kind == "kw" and self.tok.value == "or":
            self.advance()
            items.append(self.and_expr(depth + 1))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, depth: int) -> Node:
        self._depth(depth)
        items = [self.unary(depth + 1)]
        while self.tok.kind == "kw" and self.tok.value == "and":
            self.advance()
            items.append(self.unary(depth + 1))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, depth: int) -> Node:
        self._depth(depth)
        if self.tok.kind == "kw" and self.tok.value == "not":
            self.advance()
            return Not(self.unary(depth + 1))
        if self.tok.kind == "lparen":
            self.advance()
            node = self.or_expr(depth + 1)
            self.expect("rparen")
            return node
        return self.comparison()

    def field(self) -> Field:
        t = self.tok
        if t.kind != "ident":
            raise FilterError(f"Expected a field name, found {self._describe(t)}", t.pos)
        self.advance()
        if self.tok.kind != "lbracket":
            return resolve_field(t.value, t.pos)
        self.advance()
        key = self.expect("string").value
        self.expect("rbracket")
        agg = None
        if self.tok.kind == "dot":
            self.advance()
            agg = self.expect("ident").value
        return resolve_field(t.value, t.pos, bracket_key=key, agg=agg)

    def comparison(self) -> Compare:
        start = self.tok.pos
        field = self.field()
        t = self.tok
        if t.kind == "kw" and t.value == "contains":
            op = "contains"
        elif t.kind == "op":
            op = t.value
        else:
            raise FilterError(
                f"Expected an operator (= != < <= > >= ~ contains) after {field.label!r}, "
                f"found {self._describe(t)}",
                t.pos,
            )
        self.advance()
        lit = self.tok
        if lit.kind in ("number", "string"):
            value = lit.value
        elif lit.kind == "kw" and lit.value in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[lit.value]
        else:
            raise FilterError(f"Expected a value, found {self._describe(lit)}", lit.pos)
        self.advance()
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise FilterError(f"Filter has more than {MAX_COMPARISONS} comparisons", start)
        cmp = Compare(field, op, value, start)
        _check_types(cmp)
        return cmp


def parse(text: str) -> Node | None:
    """Parse a filter; an empty or blank filter is None (matches everything)."""
    if not isinstance(text, str):
        raise FilterError("Filter must be a string", 0)
    if not text.strip():
        return None
    return _Parser(tokenize(text)).parse()


# --- type checks and compilation ------------------------------------------------------------


def _check_types(c: Compare) -> None:
    f, op, v = c.field, c.op, c.value
    label = f.label
    if op == "contains" and not (f.kind == "run" and f.name in ("tags", "name")):
        raise FilterError(f"'contains' applies to tags and name, not {label}", c.pos)
    if op == "~" and not isinstance(v, str):
        raise FilterError(f"'~' needs a string: {label} ~ \"text\"", c.pos)
    if f.kind == "metric":
        if not (isinstance(v, int | float) and not isinstance(v, bool)) and v is not None:
            raise FilterError(f"{label} is a number; compare it with a number", c.pos)
        if v is None and op not in ("=", "!="):
            raise FilterError("null only works with = and !=", c.pos)
        if op == "~":
            raise FilterError(f"'~' does not apply to {label}", c.pos)
        return
    if f.kind == "param":
        if (v is None or isinstance(v, bool)) and op not in ("=", "!="):
            raise FilterError("true/false/null only work with = and !=", c.pos)
        return
    kind = RUN_FIELDS[f.name][1]
    if kind == "tags":
        if op != "contains" or not isinstance(v, str):
            raise FilterError('Use: tags contains "name"', c.pos)
    elif kind == "number":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise FilterError(f"{label} is a number", c.pos)
    elif kind == "datetime":
        if not isinstance(v, str) or op in ("~",):
            raise FilterError(f'{label} compares with a date: {label} > "2026-01-01"', c.pos)
        _parse_when(v, c.pos)
    else:
        if not isinstance(v, str):
            raise FilterError(f'{label} is text; quote the value: {label} = "..."', c.pos)
        if f.name == "status" and op in ("=", "!=") and v not in RunStatus.values:
            allowed = ", ".join(RunStatus.values)
            raise FilterError(f"Unknown status {v[:50]!r}; use one of {allowed}", c.pos)


def _parse_when(text: str, pos: int) -> datetime:
    dt = None
    try:
        dt = parse_datetime(text)
        if dt is None:
            d = parse_date(text)
            if d is not None:
                dt = datetime.combine(d, time.min)
    except ValueError:
        dt = None
    if dt is None:
        raise FilterError(f"Not a date or datetime: {text[:50]!r} (use ISO 8601)", pos)
    if timezone.is_naive(dt):
        dt = dt.replace(tzinfo=UTC)
    return dt


def _cmp(path: str, op: str, value: Any) -> Q:
    """A Q on a constant ORM path; `path` never comes from user text."""
    if op == "=":
        return Q(**{path: value})
    if op == "!=":
        return ~Q(**{path: value})
    if op == "~":
        return Q(**{f"{path}__icontains": value})
    return Q(**{f"{path}__{_OP_LOOKUP[op]}": value})


def compile_q(node: Node) -> Q:
    if isinstance(node, And):
        q = Q()
        for item in node.items:
            q &= compile_q(item)
        return q
    if isinstance(node, Or):
        q = compile_q(node.items[0])
        for item in node.items[1:]:
            q |= compile_q(item)
        return q
    if isinstance(node, Not):
        return ~compile_q(node.item)
    return _compile_compare(node)


def _compile_compare(c: Compare) -> Q:
    f, op, v = c.field, c.op, c.value
    if f.kind == "param":
        return _param_q(f.name, op, v)
    if f.kind == "metric":
        col = METRIC_AGGS[f.agg or "last"]
        series = Series.objects.filter(run=OuterRef("pk"), key=f.name)
        if v is None:
            has = Exists(series.filter(**{f"{col}__isnull": False}))
            return Q(~has) if op == "=" else Q(has)
        if f.agg in INT_METRIC_AGGS:
            op, v = _int_bound(op, v)
            if op == "never":
                return Q(pk__in=[])
        # "!=" must not match a series whose aggregate is NULL (e.g. all-NaN min).
        cond = _cmp(col, op, v) & Q(**{f"{col}__isnull": False})
        return Q(Exists(series.filter(cond)))
    path, kind = RUN_FIELDS[f.name]
    if kind == "number":
        op, v = _int_bound(op, v)
        if op == "never":
            return Q(pk__in=[])
    if kind == "tags":
        return Q(tags__contains=[v])
    if op == "contains":
        return Q(**{f"{path}__icontains": v})
    if kind == "datetime":
        v = _parse_when(v, c.pos)
    if f.name == "created_by" and op == "!=":
        # Runs without an author are "not alice" too.
        return Q(created_by__isnull=True) | ~Q(created_by__username=v)
    return _cmp(path, op, v)


def _int_bound(op: str, v: float) -> tuple[str, Any]:
    """Rewrite a comparison of an integer column with any number into an exact integer one.

    The ORM would truncate 2.5 to 2 (so `count >= 2.5` would match 2) and a number beyond
    int64 would overflow the bigint parameter; both are decided here instead.
    """
    if isinstance(v, int) and -_INT64 <= v <= _INT64:
        return op, v
    f = float(v)
    if f != f:
        return "never", None
    if op == "=":
        if f != math.floor(f) or abs(f) > _INT64:
            return "never", None
        return op, int(f)
    if op == "!=":
        if f != math.floor(f) or abs(f) > _INT64:
            return ">=", -_INT64  # every value differs
        return op, int(f)
    if op in (">", ">="):
        if f > _INT64:
            return "never", None
        if f < -_INT64:
            return ">=", -_INT64
        bound = math.floor(f) + 1 if (op == ">" and f == math.floor(f)) else math.ceil(f)
        return ">=", int(bound)
    if f < -_INT64:
        return "never", None
    if f > _INT64:
        return "<=", _INT64
    bound = math.ceil(f) - 1 if (op == "<" and f == math.ceil(f)) else math.floor(f)
    return "<=", int(bound)


def _param_q(key: str, op: str, v: Any) -> Q:
    params = Param.objects.filter(run=OuterRef("pk"), key=key)
    if v is None:
        is_null = Exists(params.exclude(type=ParamType.NULL))
        # "= null": missing or explicitly null; "!= null": present with a value.
        return Q(~is_null) if op == "=" else Q(is_null)
    if isinstance(v, bool):
        cond = Q(type=ParamType.BOOL, value_num=1.0 if v else 0.0)
        if op == "=":
            return Q(Exists(params.filter(cond)))
        return Q(Exists(params.exclude(cond)))
    if isinstance(v, int | float):
        col = "value_num"
        base = params.filter(type=ParamType.NUMBER)
    else:
        col = "value_str"
        base = params.filter(type=ParamType.STRING)
    if op == "!=":
        return Q(Exists(params.exclude(Q(**{col: v}) & Q(**{f"{col}__isnull": False}))))
    return Q(Exists(base.filter(_cmp(col, op, v))))


def filter_q(text: str) -> Q | None:
    """Parse and compile a filter; None when it is empty."""
    node = parse(text)
    return None if node is None else compile_q(node)

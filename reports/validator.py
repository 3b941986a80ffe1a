"""A small JSON Schema validator for the subset of draft 2020-12 that `results.schema.json` uses.

jsonschema is not a dependency of privaudit, so results files are checked with this validator.
Supported keywords: ``type``, ``required``, ``properties``, ``additionalProperties``, ``items``,
``enum``, ``const``, ``anyOf``, ``$ref`` (to ``#/$defs/...`` of the same document), ``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``minItems``, ``maxItems``,
``minLength`` and ``pattern``; annotations (``title``, ``description``, ...) are ignored. A schema
that uses any other keyword is rejected when it is loaded (`check_schema_keywords`), so a keyword
this validator would silently ignore can never slip into the shipped schema.

Semantics follow the specification: type-specific keywords apply only to instances of that type
(``required`` to objects, ``items`` to arrays, ``minimum`` to numbers), ``integer`` accepts any
number with a zero fractional part, booleans are not numbers.

Errors name the path of the offending value, e.g.
``methods[2].privacy.delta: expected number or null, got 'x'``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "SUPPORTED_KEYWORDS",
    "load_results_schema",
    "check_schema_keywords",
    "schema_errors",
    "semantic_errors",
    "validate_results",
    "validate",
    "format_path",
]

SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "minLength",
        "pattern",
    }
)
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_REPORTED = 20


@dataclass(frozen=True)
class _Error:
    """One violation: either an expectation (merged across anyOf branches) or a free message."""

    path: tuple[str | int, ...]
    expected: str | None
    got: Any
    message: str | None = None

    def text(self) -> str:
        body = self.message if self.message is not None else f"expected {self.expected}, got {_show(self.got)}"
        return f"{format_path(self.path)}: {body}"


def format_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    """``("methods", 2, "privacy", "delta")`` -> ``methods[2].privacy.delta``; ``()`` -> ``(root)``.

    Keys that are not identifiers are quoted: ``utility["tar@far=1e-3"]``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return repr(value)


def _type_matches(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if isinstance(value, bool):
        return False
    if name == "number":
        return isinstance(value, (int, float))
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    raise ValueError(f"schema type must be one of null, boolean, string, object, array, number, integer; got {name!r}")


def check_schema_keywords(schema: Any, path: tuple[str | int, ...] = ()) -> None:
    """Raise ``ValueError`` if ``schema`` uses a keyword this validator does not implement."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise ValueError(f"schema at {format_path(path)} must be an object or a boolean, got {_show(schema)}")
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            if key == "$defs":
                for name, sub in value.items():
                    check_schema_keywords(sub, path + ("$defs", name))
            continue
        if key not in SUPPORTED_KEYWORDS:
            raise ValueError(
                f"schema at {format_path(path)} uses keyword {key!r}, which reports.validator does not "
                f"implement (supported: {', '.join(sorted(SUPPORTED_KEYWORDS))})"
            )
        if key == "properties":
            for name, sub in value.items():
                check_schema_keywords(sub, path + ("properties", name))
        elif key in ("additionalProperties", "items"):
            check_schema_keywords(value, path + (key,))
        elif key == "anyOf":
            for i, sub in enumerate(value):
                check_schema_keywords(sub, path + ("anyOf", i))
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#/$defs/")):
            raise ValueError(
                f"schema at {format_path(path)}: only local references '#/$defs/NAME' are supported, got {value!r}"
            )


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        check_schema_keywords(root)
        self.root = root

    def resolve(self, ref: str) -> Any:
        node: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"schema reference {ref!r} does not resolve")
            node = node[part]
        return node

    def errors(self, value: Any, schema: Any, path: tuple[str | int, ...]) -> list[_Error]:
        if schema is True:
            return []
        if schema is False:
            return [_Error(path, None, value, "no value is allowed here")]
        if "$ref" in schema:
            errs = self.errors(value, self.resolve(schema["$ref"]), path)
            if errs:
                return errs
        if "anyOf" in schema:
            errs = self._any_of(value, schema["anyOf"], path)
            if errs:
                return errs
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_type_matches(value, n) for n in names):
                return [_Error(path, " or ".join(names), value)]
        if "const" in schema and not _json_equal(value, schema["const"]):
            return [_Error(path, _show(schema["const"]), value)]
        if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
            return [_Error(path, "one of " + ", ".join(_show(e) for e in schema["enum"]), value)]
        out: list[_Error] = []
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out += self._number(value, schema, path)
        elif isinstance(value, str):
            out += self._string(value, schema, path)
        elif isinstance(value, list):
            out += self._array(value, schema, path)
        elif isinstance(value, dict):
            out += self._object(value, schema, path)
        return out

    def _any_of(self, value: Any, branches: list[Any], path: tuple[str | int, ...]) -> list[_Error]:
        results = [self.errors(value, b, path) for b in branches]
        if any(not r for r in results):
            return []
        # Every branch failed. If each failed only on what the value itself is, merge the
        # expectations ("expected number or one of 'inf', ..."); otherwise report the branch that
        # got deepest into the value (the one whose type matched).
        if all(len(r) == 1 and r[0].path == path and r[0].message is None for r in results):
            return [_Error(path, " or ".join(r[0].expected or "" for r in results), value)]
        return max(results, key=lambda r: max(len(e.path) for e in r))

    @staticmethod
    def _number(value: float, schema: dict[str, Any], path: tuple[str | int, ...]) -> list[_Error]:
        if isinstance(value, float) and not math.isfinite(value):
            return [_Error(path, "a finite number (write non-finite values as 'inf', '-inf' or 'nan')", value)]
        checks = (
            ("minimum", lambda b: value >= b, ">="),
            ("maximum", lambda b: value <= b, "<="),
            ("exclusiveMinimum", lambda b: value > b, ">"),
            ("exclusiveMaximum", lambda b: value < b, "<"),
        )
        out = []
        for key, ok, sign in checks:
            if key in schema and not ok(schema[key]):
                out.append(_Error(path, f"a number {sign} {schema[key]}", value))
        return out

    @staticmethod
    def _string(value: str, schema: dict[str, Any], path: tuple[str | int, ...]) -> list[_Error]:
        out = []
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(
                _Error(
                    path,
                    "a non-empty string"
                    if schema["minLength"] == 1
                    else f"a string of at least {schema['minLength']} characters",
                    value,
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(_Error(path, f"a string matching {schema['pattern']}", value))
        return out

    def _array(self, value: list[Any], schema: dict[str, Any], path: tuple[str | int, ...]) -> list[_Error]:
        out = []
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(_Error(path, None, value, f"expected at least {schema['minItems']} items, got {len(value)}"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(_Error(path, None, value, f"expected at most {schema['maxItems']} items, got {len(value)}"))
        if "items" in schema:
            for i, item in enumerate(value):
                out += self.errors(item, schema["items"], path + (i,))
        return out

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: tuple[str | int, ...]) -> list[_Error]:
        out = []
        for key in schema.get("required", ()):
            if key not in value:
                out.append(_Error(path, None, value, f"missing required key {key!r}"))
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += self.errors(item, props[key], path + (key,))
            elif extra is False:
                allowed = ", ".join(sorted(props)) or "none"
                out.append(_Error(path + (key,), None, item, f"unknown key {key!r} (allowed keys: {allowed})"))
            else:
                out += self.errors(item, extra, path + (key,))
        return out


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


@functools.lru_cache(maxsize=1)
def _results_schema_text() -> str:
    return resources.files("reports").joinpath("results.schema.json").read_text(encoding="utf-8")


def load_results_schema() -> dict[str, Any]:
    """The results JSON Schema shipped in the package (a fresh copy each call)."""
    schema = json.loads(_results_schema_text())
    check_schema_keywords(schema)
    return schema


def schema_errors(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every violation of ``schema`` (default: the results schema), as ``"path: message"`` strings."""
    validator = _Validator(load_results_schema() if schema is None else schema)
    return [e.text() for e in validator.errors(document, validator.root, ())]


def validate(document: Any, schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing the violations of ``schema`` (no semantic checks)."""
    _raise(schema_errors(document, schema), "document")


def semantic_errors(document: dict[str, Any]) -> list[str]:
    """Cross-field rules of a schema-valid results document that JSON Schema cannot express."""
    out: list[str] = []

    def same_length(obj: dict[str, Any], a: str, b: str, path: tuple[str | int, ...]) -> None:
        if len(obj[a]) != len(obj[b]):
            out.append(
                f"{format_path(path)}: {a} and {b} must have the same length, got {len(obj[a])} and {len(obj[b])}"
            )

    if "repeats" in document and document.get("schema_version") in ("1.0", "1.1"):
        out.append(f"repeats: new in schema_version 1.2, but the document says {document.get('schema_version')}")
    if "claims" in document and document.get("schema_version") in ("1.0", "1.1", "1.2"):
        out.append(f"claims: new in schema_version 1.3, but the document says {document.get('schema_version')}")
    for i, method in enumerate(document.get("methods", [])):
        privacy = method.get("privacy", {})
        if "formal_epsilon_all" in privacy and document.get("schema_version") == "1.0":
            out.append(
                f"{format_path(('methods', i, 'privacy', 'formal_epsilon_all'))}: new in schema_version "
                "1.1, but the document says 1.0"
            )
        if "utility_intervals" in method and document.get("schema_version") in ("1.0", "1.1", "1.2"):
            out.append(
                f"{format_path(('methods', i, 'utility_intervals'))}: new in schema_version 1.3, but the document says "
                f"{document.get('schema_version')}"
            )
        if document.get("schema_version") in ("1.0", "1.1"):
            new = [k for k in ("guarantees", "per_person", "verdict") if k in privacy]
            new += [k for k in ("flags", "fidelity") if k in method]
            for key in new:
                out.append(
                    f"{format_path(('methods', i, key))}: new in schema_version 1.2, but the document says "
                    f"{document.get('schema_version')}"
                )
        for j, attack in enumerate(method.get("attacks", [])):
            base = ("methods", i, "attacks", j)
            if attack.get("roc") is not None:
                same_length(attack["roc"], "fpr", "tpr", base + ("roc",))
            metric = attack.get("success_metric")
            if metric is not None and metric not in attack.get("metrics", {}):
                out.append(
                    f"{format_path(base + ('success_metric',))}: {metric!r} is not a key of metrics "
                    f"(keys: {', '.join(sorted(attack.get('metrics', {}))) or 'none'})"
                )
            for name, pair in attack.get("intervals", {}).items():
                lo, hi = (_decode_simple(v) for v in pair)
                if lo > hi:
                    out.append(f"{format_path(base + ('intervals', name))}: lower end {lo} is above upper end {hi}")
    analyses = document.get("analyses", {})
    for dim, curve in analyses.get("occupancy", {}).items():
        same_length(curve, "rho", "ratio", ("analyses", "occupancy", dim))
    for acc, curve in analyses.get("epsilon_vs_rounds", {}).items():
        same_length(curve, "rounds", "epsilon", ("analyses", "epsilon_vs_rounds", acc))
    return out


def _decode_simple(v: Any) -> float:
    return float(v) if isinstance(v, str) else v


def validate_results(document: Any) -> None:
    """Check a loaded ``results.json`` dict against the shipped schema and the cross-field rules.

    Raises ``ValueError`` whose message lists each violation as ``path: message``.
    """
    errors = schema_errors(document)
    if not errors and isinstance(document, dict):
        errors = semantic_errors(document)
    _raise(errors, "results document")


def _raise(errors: list[str], what: str) -> None:
    if not errors:
        return
    shown = errors[:_MAX_REPORTED]
    more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    raise ValueError(
        f"invalid {what} ({len(errors)} problem{'s' if len(errors) != 1 else ''}):\n  " + "\n  ".join(shown) + more
    )

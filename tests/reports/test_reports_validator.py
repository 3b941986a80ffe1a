"""The small JSON Schema validator, checked against hand-made cases and against jsonschema
(an independent implementation, present in the test environment through nbformat)."""

from __future__ import annotations

import copy
import json

import jsonschema
import numpy as np
import pytest

from reports.validator import (
    check_schema_keywords,
    format_path,
    load_results_schema,
    schema_errors,
    validate,
    validate_results,
)


@pytest.fixture(scope="module")
def document(sample):
    return sample.to_dict()


def test_shipped_schema_is_valid_draft_2020_12():
    schema = load_results_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["enum"] == ["1.0", "1.1", "1.2", "1.3"]


def test_sample_document_is_valid_for_both_validators(document):
    assert schema_errors(document) == []
    validate_results(document)
    jsonschema.Draft202012Validator(load_results_schema()).validate(document)


def test_error_names_the_path_of_a_bad_delta(document):
    doc = copy.deepcopy(document)
    doc["methods"][2]["privacy"]["delta"] = "x"
    with pytest.raises(ValueError) as info:
        validate_results(doc)
    assert "methods[2].privacy.delta: expected number or null, got 'x'" in str(info.value)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.pop("methods"), "(root): missing required key 'methods'"),
    (lambda d: d.update(colour="red"), "colour: unknown key 'colour'"),
    (lambda d: d.update(schema_version="2.0"), "schema_version: expected one of '1.0', '1.1', '1.2', '1.3', got '2.0'"),
    (lambda d: d["methods"][0]["utility"].update({"tar@far=1e-4": "x"}),
     "methods[0].utility[\"tar@far=1e-4\"]: expected number or one of 'inf', '-inf', 'nan', got 'x'"),
    (lambda d: d["methods"][7]["privacy"]["formal_epsilon"].update(rdp=-1.0),
     "methods[7].privacy.formal_epsilon.rdp: expected a number >= 0 or 'inf', got -1.0"),
    (lambda d: d["methods"][7]["privacy"]["empirical"][0].update(trials=2.5),
     "methods[7].privacy.empirical[0].trials: expected integer, got 2.5"),
    (lambda d: d["methods"][7]["privacy"]["empirical"][0].update(refutes_claim=1),
     "methods[7].privacy.empirical[0].refutes_claim: expected boolean, got 1"),
    (lambda d: d["methods"][1]["attacks"][0]["intervals"].update(x=[0.1]),
     "methods[1].attacks[0].intervals.x: expected at least 2 items, got 1"),
    (lambda d: d["methods"][1].update(name=""), "methods[1].name: expected a non-empty string, got ''"),
    (lambda d: d.update(created="yesterday"), "created: expected a string matching"),
    (lambda d: d["timings"].update(data=True), "timings.data: expected number, got true"),
    (lambda d: d["analyses"]["cos_p_phat"][0].update(values=[0.5, 1.5]),
     "analyses.cos_p_phat[0].values[1]: expected a number <= 1.000001, got 1.5"),
])
def test_rejections_name_path_and_problem(document, mutate, expected):
    doc = copy.deepcopy(document)
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), errors
    assert not jsonschema.Draft202012Validator(load_results_schema()).is_valid(doc)


def test_semantic_rules(document):
    doc = copy.deepcopy(document)
    attack = doc["methods"][2]["attacks"][0]
    attack["roc"]["tpr"] = attack["roc"]["tpr"][:-1]
    attack["success_metric"] = "nope"
    attack["intervals"]["top1_rate"] = [0.9, 0.1]
    doc["analyses"]["occupancy"]["64"]["ratio"] = [0.1]
    with pytest.raises(ValueError) as info:
        validate_results(doc)
    text = str(info.value)
    assert "methods[2].attacks[0].roc: fpr and tpr must have the same length" in text
    assert "methods[2].attacks[0].success_metric: 'nope' is not a key of metrics" in text
    assert "methods[2].attacks[0].intervals.top1_rate: lower end 0.9 is above upper end 0.1" in text
    assert "analyses.occupancy[\"64\"]: rho and ratio must have the same length" in text


def test_integer_and_number_semantics_follow_the_specification():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": "number"}}}
    assert schema_errors({"n": 2.0, "x": 3}, schema) == []
    assert schema_errors({"n": 2.5}, schema) == ["n: expected integer, got 2.5"]
    assert schema_errors({"x": False}, schema) == ["x: expected number, got false"]
    assert schema_errors({"x": float("nan")}, schema)[0].startswith("x: expected a finite number")
    # Type-specific keywords ignore other types (null passes a numeric range).
    ranged = {"type": ["number", "null"], "exclusiveMinimum": 0}
    assert schema_errors(None, ranged) == []
    assert schema_errors(0, ranged) == ["(root): expected a number > 0, got 0"]


def test_unsupported_keywords_are_refused():
    with pytest.raises(ValueError, match="uses keyword 'oneOf'"):
        check_schema_keywords({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}})
    with pytest.raises(ValueError, match="only local references"):
        check_schema_keywords({"$ref": "https://example.org/schema"})
    with pytest.raises(ValueError, match="uses keyword 'uniqueItems'"):
        validate([1], {"type": "array", "uniqueItems": True})


def test_format_path():
    assert format_path(()) == "(root)"
    assert format_path(("methods", 2, "privacy", "delta")) == "methods[2].privacy.delta"
    assert format_path(("observers", "client:3")) == 'observers["client:3"]'
    assert format_path((0, "a")) == "[0].a"


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
        if not obj:
            yield path
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _leaves(v, path + (i,))
        if not obj:
            yield path
    else:
        yield path


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _shrink(obj):
    """Every list cut to its first 3 items (paired lists stay paired): a small but complete document."""
    if isinstance(obj, dict):
        return {k: _shrink(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shrink(v) for v in obj[:3]]
    return obj


def test_agrees_with_jsonschema_on_random_mutations(document):
    """Validity (not messages) must match jsonschema's on 300 seeded single-leaf mutations."""
    schema = load_results_schema()
    reference = jsonschema.Draft202012Validator(schema)
    document = _shrink(document)
    assert reference.is_valid(document) and not schema_errors(document)
    leaves = [p for p in _leaves(document) if p]
    pool = [None, "x", "inf", "nan", -1, 0, 0.5, 2, 1.5, True, [], {}, [0.1, 0.2], {"a": 1}, "", 1e-5]
    rng = np.random.default_rng(0)
    disagreements = []
    checked_invalid = 0
    for _ in range(300):
        doc = copy.deepcopy(document)
        path = leaves[rng.integers(len(leaves))]
        value = pool[rng.integers(len(pool))]
        _set(doc, path, copy.deepcopy(value))
        ours = not schema_errors(doc)
        theirs = reference.is_valid(doc)
        checked_invalid += not theirs
        if ours != theirs:
            disagreements.append((format_path(path), json.dumps(value), ours, theirs))
    assert disagreements == []
    assert checked_invalid > 100  # the mutations do exercise rejections

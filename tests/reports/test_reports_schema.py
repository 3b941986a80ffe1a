"""AuditResult <-> results.json: round trips (inf, NaN, nested dataclasses, numpy), versions, validation."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
from reports_helpers import small_result

from reports.schema import (
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Analyses,
    AttackFinding,
    AuditFinding,
    AuditResult,
    MethodResult,
    PrivacySummary,
    load_results,
    save_results,
    software_versions,
)


def test_schema_file_is_package_data():
    path = resources.files("reports").joinpath("results.schema.json")
    assert path.is_file()
    versions = json.loads(path.read_text())["properties"]["schema_version"]["enum"]
    assert versions == list(SUPPORTED_SCHEMA_VERSIONS) and versions[-1] == SCHEMA_VERSION


def test_round_trip_of_the_sample_is_exact(sample_folder, tmp_path):
    folder, result = sample_folder
    path = save_results(result, tmp_path)
    assert path == tmp_path / "results.json"
    loaded = load_results(tmp_path)
    # NaN != NaN, so compare the encoded documents, then spot-check the decoded values.
    assert loaded.to_dict() == result.to_dict()
    fedgc = loaded.method("fedgc")
    assert fedgc.privacy.formal_epsilon["basic"] == math.inf
    assert math.isnan(fedgc.utility["tar@far=1e-3"])
    assert isinstance(fedgc.privacy, PrivacySummary)
    assert isinstance(fedgc.attacks[0], AttackFinding)
    assert isinstance(loaded.method("privacyface").privacy.empirical[1], AuditFinding)
    assert loaded.method("privacyface").privacy.empirical[1].refutes_claim is True
    assert isinstance(loaded.analyses, Analyses)
    assert loaded.analyses.occupancy.keys() == result.analyses.occupancy.keys()
    assert loaded.method("fedface").attacks[1].image_grid == "grids/fedface_inversion_class_centers.png"
    assert loaded.method("fedface").attacks[0].intervals["top1_rate"] == result.method("fedface").attacks[0].intervals["top1_rate"]


def test_non_finite_numbers_are_strings_in_the_file(tmp_path):
    result = small_result()
    result.methods[1].privacy.epsilon_per_round = {"basic": [math.inf, math.inf]}
    result.methods[0].utility["neg"] = -math.inf
    text = result.to_json(tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    fedgc = doc["methods"][1]
    assert fedgc["privacy"]["formal_epsilon"] == {"basic": "inf"}
    assert fedgc["privacy"]["epsilon_per_round"] == {"basic": ["inf", "inf"]}
    assert doc["methods"][0]["utility"]["tar@far=1e-3"] == "nan"
    assert doc["methods"][0]["utility"]["neg"] == "-inf"
    back = AuditResult.from_json(tmp_path / "r.json")
    assert back.methods[0].utility["neg"] == -math.inf
    assert back.methods[1].privacy.epsilon_per_round["basic"] == [math.inf, math.inf]


def test_free_form_objects_keep_strings_and_tag_non_finite_floats(tmp_path):
    scenario = {"dp": {"epsilon": math.inf, "label": "inf", "sweep": [1.0, math.nan]}, "name": "nan"}
    result = small_result(scenario=scenario)
    result.analyses.extra = {"x": -math.inf}
    result.methods[0].params = {"rho": np.float32(1.25), "clients": np.int64(4), "ids": np.arange(3)}
    doc = json.loads(result.to_json(tmp_path / "r.json").read_text())
    assert doc["scenario"]["dp"] == {"epsilon": {"$float": "inf"}, "label": "inf", "sweep": [1.0, {"$float": "nan"}]}
    assert doc["scenario"]["name"] == "nan"
    back = AuditResult.from_json(tmp_path / "r.json")
    assert back.scenario["dp"]["epsilon"] == math.inf
    assert back.scenario["dp"]["label"] == "inf" and back.scenario["name"] == "nan"
    assert math.isnan(back.scenario["dp"]["sweep"][1])
    assert back.analyses.extra == {"x": -math.inf}
    assert back.methods[0].params == {"rho": 1.25, "clients": 4, "ids": [0, 1, 2]}


def test_numpy_values_are_written_as_plain_numbers(tmp_path):
    result = small_result()
    m = result.methods[0]
    m.utility = {"accuracy": np.float32(0.75), "auroc": np.float64(np.nan)}
    m.bytes_per_round = {"client_upload": np.int64(1024)}
    m.attacks[0].roc = {"fpr": np.array([0.0, 0.5, 1.0]), "tpr": np.array([0.0, 0.9, 1.0])}
    m.privacy.per_party = [{"party": "client:0", "round": np.int64(3), "epsilon": np.float64(np.inf)}]
    back = AuditResult.from_json(result.to_json(tmp_path / "r.json"))
    bm = back.methods[0]
    assert bm.utility["accuracy"] == pytest.approx(0.75) and math.isnan(bm.utility["auroc"])
    assert bm.bytes_per_round == {"client_upload": 1024.0}
    assert bm.attacks[0].roc == {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.9, 1.0]}
    assert bm.privacy.per_party == [{"party": "client:0", "round": 3, "epsilon": math.inf}]


def test_unknown_schema_version_is_a_clear_error(tmp_path):
    doc = small_result().to_dict()
    doc["schema_version"] = "9.9"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"schema_version '9.9' is not supported: this privaudit reads '1.0'"):
        load_results(path)
    del doc["schema_version"]
    with pytest.raises(ValueError, match="no 'schema_version'"):
        AuditResult.from_dict(doc)
    with pytest.raises(ValueError, match="schema_version '0.1' is not supported"):
        small_result(schema_version="0.1")


def test_invalid_files_are_refused_with_the_path(tmp_path):
    doc = small_result().to_dict()
    doc["methods"][1]["privacy"]["delta"] = 2.0
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as info:
        load_results(path)
    assert str(path) in str(info.value)
    assert "methods[1].privacy.delta: expected a number < 1, got 2.0" in str(info.value)
    path.write_text('{"schema_version": "1.0", "x": NaN}')
    with pytest.raises(ValueError, match="non-standard JSON constant NaN"):
        load_results(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_results(path)
    with pytest.raises(ValueError, match="must be a JSON object"):
        AuditResult.from_dict([1, 2])


@pytest.mark.parametrize(("build", "message"), [
    (lambda: PrivacySummary(delta=0.0), "PrivacySummary.delta must be None or in the open interval (0, 1), got 0.0"),
    (lambda: PrivacySummary(delta=1.5), "got 1.5"),
    (lambda: PrivacySummary(formal_epsilon={"rdp": -0.1}), "formal_epsilon['rdp'] must be >= 0 or math.inf"),
    (lambda: PrivacySummary(formal_epsilon={"rdp": math.nan}), "must be >= 0 or math.inf"),
    (lambda: AuditFinding("a", 1.0, 0.5, confidence=1.0, trials=10), "confidence must be in (0, 1), got 1.0"),
    (lambda: AuditFinding("a", 1.0, 0.5, confidence=0.95, trials=0), "trials must be an integer >= 1, got 0"),
    (lambda: AuditFinding("a", -1.0, 0.5, confidence=0.95, trials=5), "claimed_epsilon must be >= 0"),
    (lambda: AuditFinding("a", 1.0, 0.5, 0.95, 5, delta=1.0), "delta must be None or in the open interval"),
    (lambda: AttackFinding("knn", "server", "w", roc={"fpr": [0.0, 1.0], "tpr": [1.0]}),
     "fpr and tpr must have the same length, got 2 and 1"),
    (lambda: AttackFinding("knn", "server", "w", roc={"fpr": [0.0]}), "exactly the keys 'fpr' and 'tpr'"),
    (lambda: AttackFinding("knn", "server", "w", metrics={"a": 1.0}, success_metric="b"),
     "success_metric 'b' is not a key of metrics"),
    (lambda: AttackFinding("knn", "server", "w", intervals={"a": (0.1,)}), "must be a pair [lo, hi]"),
    (lambda: MethodResult(name=""), "MethodResult.name must be a non-empty string"),
    (lambda: small_result(created="2025-03-04T05:06:07+02:00"), "created must be in UTC"),
    (lambda: small_result(created="March"), "created must be an ISO 8601 date-time"),
    (lambda: small_result(timings={"x": -1.0}), "timings['x'] must be a finite number of seconds >= 0"),
    (lambda: small_result(methods=[MethodResult("a"), MethodResult("a")]), "method names must be unique"),
])
def test_bad_values_are_refused_on_construction(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


def test_bad_values_are_refused_on_writing(tmp_path):
    result = small_result(scenario={"path": tmp_path})
    with pytest.raises(ValueError, match=r"scenario.path: a value of type PosixPath is not JSON-able"):
        result.to_json(tmp_path / "r.json")
    result = small_result(scenario={"$float": "inf"})
    with pytest.raises(ValueError, match="reserved"):
        result.to_dict()
    result = small_result()
    result.methods[0].utility["flag"] = True
    with pytest.raises(ValueError, match="utility.flag must be a number, got the boolean True"):
        result.to_dict()
    result = small_result()
    result.methods[0].shares = ["backbone", 3]
    with pytest.raises(ValueError, match=r"shares\[1\] must be a string"):
        result.to_dict()
    assert not (tmp_path / "r.json").exists()


def test_helpers_of_the_dataclasses():
    result = small_result()
    private, raw = result.methods
    assert private.privacy.tightest() == ("rdp", 2.5)
    assert raw.privacy.tightest() == ("basic", math.inf)
    assert PrivacySummary().tightest() is None
    assert private.privacy.max_lower_bound().name == "end-to-end"
    assert raw.best_attack().attack == "knn" and raw.attack_success() == 0.9
    assert math.isnan(MethodResult("x").attack_success())
    flags = result.all_flags()
    assert flags[0] == "privacyface: classic Gaussian calibration used at epsilon >= 1"
    assert any(f.startswith("privacyface: audit 'end-to-end' refutes the claimed epsilon 2.5: empirical lower "
                            "bound 3.1") for f in flags)
    with pytest.raises(KeyError, match="no method 'nope'"):
        result.method("nope")


def test_defaults_are_filled_and_valid():
    result = AuditResult()
    assert result.schema_version == SCHEMA_VERSION == "1.3"
    assert result.created.endswith("+00:00")
    assert result.software["python"] and "numpy" in result.software
    assert result.to_dict()["methods"] == []
    versions = software_versions(("numpy", "surely-not-installed-package"))
    assert versions["numpy"] == np.__version__ and "surely-not-installed-package" not in versions

from dataclasses import dataclass, field
from typing import Literal

import pytest

from privaudit.config_io import ConfigError, from_dict, load_document, to_dict


@dataclass
class Inner:
    rho: float = 1.3
    kind: Literal["tight", "weak"] = "tight"


@dataclass
class Outer:
    name: str = "x"
    rounds: int = 2
    inner: Inner = field(default_factory=Inner)
    methods: list[str] = field(default_factory=list)
    span: tuple[int, int] = (0, 1)
    maybe: float | None = None


def test_round_trip_nested():
    doc = {"name": "a", "rounds": 3, "inner": {"rho": 1, "kind": "weak"}, "methods": ["fedpe"], "span": [2, 5]}
    obj = from_dict(Outer, doc)
    assert obj.inner == Inner(rho=1.0, kind="weak")
    assert obj.span == (2, 5)
    assert to_dict(obj) == {**doc, "inner": {"rho": 1.0, "kind": "weak"}, "span": [2, 5], "maybe": None}


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError, match=r"inner: unknown key\(s\) 'rhoo'; allowed: kind, rho"):
        from_dict(Outer, {"inner": {"rhoo": 1.0}})


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"rounds": "3"}, r"rounds: expected an integer, got '3'"),
        ({"rounds": True}, r"rounds: expected an integer"),
        ({"inner": {"kind": "loose"}}, r"inner.kind: 'loose' is not allowed; choose one of 'tight', 'weak'"),
        ({"methods": ["a", 3]}, r"methods\[1\]: expected a string"),
        ({"span": [1]}, r"span: expected 2 items, got 1"),
        ({"inner": {"rho": float("nan")}}, r"inner.rho: expected a finite number"),
    ],
)
def test_bad_values_name_the_path(doc, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, doc)


def test_load_toml_and_yaml(tmp_path):
    (tmp_path / "s.toml").write_text('name = "t"\n[inner]\nrho = 1.2\n')
    (tmp_path / "s.yaml").write_text("name: y\ninner:\n  rho: 1.1\n")
    assert from_dict(Outer, load_document(tmp_path / "s.toml")).inner.rho == 1.2
    assert from_dict(Outer, load_document(tmp_path / "s.yaml")).name == "y"


def test_yaml_loader_is_safe(tmp_path):
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_document(tmp_path / "evil.yaml")


def test_bad_suffix_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_document(tmp_path / "nope.toml")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"must end in .toml, .yaml or .yml"):
        load_document(tmp_path / "s.json")


def test_example_scenarios_load():
    """The scenario files shipped in examples/ stay valid as the Scenario grows."""
    from pathlib import Path

    from privaudit.scenario import Scenario

    files = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))
    assert files
    for path in files:
        scenario = Scenario.load(path)
        assert scenario.methods and scenario.name
    clusters = Scenario.load(Path(__file__).resolve().parents[2] / "examples" / "clusters.toml")
    assert clusters.privacy.queries == 4 and clusters.federation.num_clients == 8


def test_python_dash_m_privaudit_runs_this_checkout():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import runpy, sys; sys.argv = ['privaudit', '--version']; runpy.run_module('privaudit', run_name='__main__')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("privaudit ")
    where = subprocess.run([sys.executable, "-c", "import privaudit; print(privaudit.__file__)"], capture_output=True,
                           text=True, cwd=root, timeout=120, check=True)
    assert Path(where.stdout.strip()).resolve().parent == root / "privaudit"

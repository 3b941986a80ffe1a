"""Engine selection (`privaudit.engines`): names checked in scenarios and at the call."""

from __future__ import annotations

import pytest

from privaudit.engines import ENGINE_NAMES, check_engine, run_with_engine
from privaudit.scenario import FederationSpec


def test_engine_names_accepted_and_default_is_inprocess() -> None:
    assert FederationSpec().engine == "inprocess"
    for name in ENGINE_NAMES:
        assert FederationSpec(engine=name).engine == name


@pytest.mark.parametrize("bad", ["flower", "", "Inprocess"])
def test_unknown_engine_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(ValueError, match=f"federation.engine must be one of .*got {bad!r}"):
        FederationSpec(engine=bad)
    with pytest.raises(ValueError, match="inprocess, flower-simulation, flower-deployment"):
        run_with_engine(bad, None, [])
    assert check_engine("inprocess") == "inprocess"

"""Scale presets of φ0 (`tiny` for tests, `demo` for the default job on 2 CPU cores, `bench` for
the claims benchmark, `paper` for a GPU): one source, the scenario presets
(`privaudit.scenario.Scenario.preset`), so that `privaudit pretrain --scale demo` warms exactly the
cache `privaudit audit` reads."""

from __future__ import annotations

import dataclasses

from federated_core.pretrain import PretrainConfig
from privaudit.scenario import SCALES  # one source of the preset names (re-exported)


def pretrain_config(
    scale: str, seed: int = 0, identities: int | None = None, difficulty: float | None = None
) -> PretrainConfig:
    """The φ0 pre-training config of a scale preset (that of ``Scenario.preset(scale)``), with an
    optional number of public identities and generator difficulty."""
    from privaudit.pipeline import pretrain_config_for
    from privaudit.scenario import Scenario

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if identities is not None and identities < 2:
        raise ValueError(f"identities must be >= 2, got {identities}")
    scenario = Scenario.preset(scale, seed=seed)
    if identities is not None:
        scenario = dataclasses.replace(scenario, pretrain=dataclasses.replace(scenario.pretrain, identities=identities))
    if difficulty is not None:
        scenario = dataclasses.replace(scenario, data=dataclasses.replace(scenario.data, difficulty=difficulty))
    return pretrain_config_for(scenario)

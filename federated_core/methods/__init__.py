"""Federated methods, one module each, all on the protocol of `federated_core.methods.base`.

Names (CLI/config): ``fedpe``, ``fedpe-fixed``, ``shared-centers``, ``fedface``, ``fedgc``,
``fedgc-cos`` (this package's own), and whatever sibling modules register (``fedfr``, ``fedfs``,
``privacyface``, ...). `get_method(name, **hyperparams)` builds one; `available_methods()` lists
them; `register_method(name, **defaults)` adds one (see `base`). The ``fidelity`` hyper-parameter
selects a preset (``"default"``, ``"paper"``, ``"official-code"``; see `fidelity`) and
`fidelity_note(name, fidelity)` describes it in one line.
"""

from federated_core.methods.base import (
    BACKBONE_PREFIX,
    BackboneMethod,
    BackboneWorkspace,
    FedAvg,
    GlobalModel,
    Method,
    available_methods,
    get_method,
    method_class,
    register_method,
)
from federated_core.methods.fidelity import FIDELITIES, fidelity_note

__all__ = [
    "BACKBONE_PREFIX",
    "FIDELITIES",
    "BackboneMethod",
    "BackboneWorkspace",
    "FedAvg",
    "GlobalModel",
    "Method",
    "available_methods",
    "fidelity_note",
    "get_method",
    "method_class",
    "register_method",
]

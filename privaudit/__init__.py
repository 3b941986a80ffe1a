"""privaudit: train, attack and audit federated face-recognition systems.

Layers (imports only point down): privaudit (facade) > reports > attacks > federated_core >
accountants. See ../shared/DESIGN.md in the development tree.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Scenario": ("privaudit.scenario", "Scenario"),
    "MethodSpec": ("privaudit.scenario", "MethodSpec"),
    "run_audit": ("privaudit.pipeline", "run_audit"),
    "AuditResult": ("reports.schema", "AuditResult"),
    "load_results": ("reports.schema", "load_results"),
    "write_report": ("reports.html", "write_report"),
}


def __getattr__(name: str) -> Any:  # PEP 562: `import privaudit` stays cheap (no torch)
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'privaudit' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]

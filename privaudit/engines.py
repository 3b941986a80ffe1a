"""Which engine runs a federation: the in-process engine (`federated_core.engine.run_federated`,
the default) or Flower (`privaudit.flower`, the optional extra ``privaudit[flower]``).

Every engine takes the same arguments as `run_federated` and returns its `FederatedResult`, with
the same run folder layout, so the stages after training cannot tell which engine ran.
"""

from __future__ import annotations

from typing import Any

ENGINE_NAMES = ("inprocess", "flower-simulation", "flower-deployment")


def check_engine(engine: str, where: str = "federation.engine") -> str:
    """``engine`` when it is one of `ENGINE_NAMES`; otherwise a ValueError naming it."""
    if engine not in ENGINE_NAMES:
        raise ValueError(f"{where} must be one of {', '.join(ENGINE_NAMES)}, got {engine!r}")
    return engine


def run_with_engine(engine: str, config: Any, clients: Any, **kwargs: Any) -> Any:
    """Train ``config.method`` over ``clients`` on ``engine``; ``kwargs`` as `run_federated` takes them."""
    check_engine(engine)
    if engine == "inprocess":
        from federated_core.engine import run_federated

        return run_federated(config, clients, **kwargs)
    try:
        from privaudit.flower.engine import run_on_flower
    except ImportError as exc:
        raise RuntimeError(f"engine {engine!r} needs Flower: pip install 'privaudit[flower]' ({exc})") from exc
    return run_on_flower(engine.removeprefix("flower-"), config, clients, **kwargs)

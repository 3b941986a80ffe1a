"""privaudit on Flower (the optional extra ``privaudit[flower]``, flwr 1.42).

* `run_on_flower` (`privaudit.flower.engine`): our methods on Flower's Simulation Engine or on a
  SuperLink with SuperNodes as processes on 127.0.0.1 (`privaudit.flower.deployment`), with the
  in-process engine's result (`privaudit.engines`).
* `wiretap` (`privaudit.flower.tap`): a client-side Mod for any Flower app that records what
  the client receives and sends in our WireLog format, so `privaudit attack` can read it.

Modules: `codec` (our `Message` <-> Flower records), `protocol` (message types and record
names), `shards` (logical clients on SuperNodes), `client_app`, `server_app`, `engine`,
`deployment` (with `certs`, `processes`, `deployed`), `tap`.
"""

from __future__ import annotations

import os
from typing import Any

# Flower reports usage to its servers unless told not to; privaudit talks to nothing but loopback.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


def wiretap(out_dir: Any, **options: Any) -> Any:
    """A Flower client-side Mod recording every message into a WireLog under ``out_dir`` (see
    `privaudit.flower.tap.wiretap` for ``options``)."""
    from privaudit.flower.tap import wiretap as _wiretap

    return _wiretap(out_dir, **options)


def run_on_flower(mode: str, config: Any, clients: Any, **kwargs: Any) -> Any:
    """See `privaudit.flower.engine.run_on_flower`."""
    from privaudit.flower.engine import run_on_flower as _run

    return _run(mode, config, clients, **kwargs)


__all__ = ["run_on_flower", "wiretap"]

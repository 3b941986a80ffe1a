"""How many CPU threads torch uses: the cores this process may run on, unless the user says.

torch's default is the machine's core count, which in a container or under ``taskset`` can exceed
the cores this process is allowed; two processes on a busy 2-core machine then oversubscribe it
(runs 10-15x slower were measured). `configure_threads` sets torch's intra-op threads to the
cores in this process's CPU affinity mask, or to ``--threads`` / ``PRIVAUDIT_THREADS``.

Results depend on the thread count only through the order of floating-point sums inside
matrix products and convolutions: the same seed with the same thread count gives the same bytes;
another thread count gives numbers that agree to rounding, not bit for bit.
"""

from __future__ import annotations

import os

ENV_VAR = "PRIVAUDIT_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count to ``requested``, else ``$PRIVAUDIT_THREADS``, else the
    available cores; returns the count set. A bad value is a ValueError naming where it came from."""
    import torch

    source = "--threads"
    if requested is None and os.environ.get(ENV_VAR):
        source, raw = ENV_VAR, os.environ[ENV_VAR]
        try:
            requested = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be an integer >= 1, got {raw!r}") from None
    if requested is not None and (isinstance(requested, bool) or requested < 1):
        raise ValueError(f"{source} must be an integer >= 1, got {requested!r}")
    count = requested if requested is not None else available_cores()
    torch.set_num_threads(count)
    return count

"""The generic apps as a Flower App for a deployment (``flwr run`` loads them from a FAB).

`privaudit.flower.deployment` writes a small Flower App whose components are `server_app` and
`client_app` below. The ServerApp (in the SuperLink's ``flwr-serverapp`` process) reads its jobs
from the file named by the run config ``privaudit-jobs`` and writes the `Outcome` to the file
named by ``privaudit-result``; the ClientApp (in each SuperNode's ``flwr-clientapp`` process)
reads its shard under its node config ``privaudit-root``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from privaudit.flower import ipc
from privaudit.flower.client_app import make_client_app
from privaudit.flower.server_app import Outcome, run_jobs

JOBS_KEY = "privaudit-jobs"
RESULT_KEY = "privaudit-result"


def make_deployed_server_app() -> ServerApp:
    """The ServerApp of a deployment: jobs from a file, the outcome to a file."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        spec = ipc.load(Path(str(context.run_config[JOBS_KEY])))  # written by this run's parent
        torch.set_num_threads(int(spec["threads"]))  # the parent's: the same sums in the same order
        outcome = Outcome()
        run_jobs(grid, spec["jobs"], outcome, spec["num_nodes"], spec["timeout"])
        result = Path(str(context.run_config[RESULT_KEY]))
        ipc.save(ipc.portable_outcome(outcome), result)

    return app


server_app: ServerApp = make_deployed_server_app()
client_app: ClientApp = make_client_app(None)

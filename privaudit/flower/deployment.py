"""``flower-deployment``: a SuperLink and N SuperNodes as processes on 127.0.0.1, started and
stopped by privaudit.

`deploy` writes, under the deployment folder (``<run folder>/flower/`` when the first run has one,
else a temporary folder): ``tls/`` (a CA and the SuperLink's certificate, and each SuperNode's
authentication key, all generated now), ``home/`` (the Flower CLI's configuration: one SuperLink
connection), ``app/`` (a Flower App whose components are `privaudit.flower.deployed`'s apps),
``jobs.pt`` and ``result.pt`` while it runs (removed afterwards: they hold the clients' data and
states), and ``logs/`` (one log per process). It starts the SuperLink
(TLS, SuperNode authentication), registers each SuperNode's public key, starts the SuperNodes
(each with its partition and its data root in its node config), submits the run with
``flwr run --stream`` and waits for its result. ``insecure=True`` runs without TLS and without
SuperNode authentication (only when asked). Every process is torn down on return, on error and
on Ctrl-C (`privaudit.flower.processes`); a process still alive after that is an error naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from privaudit.flower import ipc
from privaudit.flower.certs import make_node_key, make_tls
from privaudit.flower.deployed import JOBS_KEY, RESULT_KEY
from privaudit.flower.processes import Processes, check_port_free, free_port, tail
from privaudit.flower.server_app import Job, Outcome

CONNECTION = "privaudit"
READY_SUPERLINK = "Application startup complete"
READY_SUPERNODE = "SuperNode ID:"


def _app(folder: Path, jobs_file: Path, result_file: Path) -> Path:
    """A Flower App (pyproject + one module) whose components are the deployed generic apps."""
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "privaudit_flower_app.py").write_text(
        '"""privaudit\'s generic Flower apps (see privaudit.flower.deployed)."""\n'
        "from privaudit.flower import deployed\n\n"
        "server_app = deployed.server_app\n"
        "client_app = deployed.client_app\n"
    )
    (app / "pyproject.toml").write_text(
        "\n".join(
            [
                "[build-system]",
                'requires = ["hatchling"]',
                'build-backend = "hatchling.build"',
                "[project]",
                'name = "privaudit-flower-app"',
                'version = "1.0.0"',
                'description = "privaudit methods on Flower"',
                'license = "Apache-2.0"',
                "dependencies = []",
                "[tool.hatch.build.targets.wheel]",
                'packages = ["."]',
                "[tool.flwr.app]",
                'publisher = "privaudit"',
                "[tool.flwr.app.components]",
                'serverapp = "privaudit_flower_app:server_app"',
                'clientapp = "privaudit_flower_app:client_app"',
                "[tool.flwr.app.config]",
                f"{JOBS_KEY} = {str(jobs_file)!r}",
                f"{RESULT_KEY} = {str(result_file)!r}",
                "",
            ]
        )
    )
    return app


def _home(folder: Path, port: int, ca: Path | None) -> Path:
    """The Flower CLI's home with one SuperLink connection (TLS with ``ca``, or insecure)."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    security = f"root-certificates = {str(ca)!r}" if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n{security}\n'
    )
    return home


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # flower-superexec & co.
    env["FLWR_HOME"] = str(home)
    # the parent's torch thread count in every process (the apps also set it from the jobs file)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["FLWR_TELEMETRY_ENABLED"] = "0"  # no network but loopback
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")  # start each ClientApp sooner (default 1 s)
    return env


def _command(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _register(procs: Processes, public_key: Path, logs: Path, timeout: float) -> None:
    """Register a SuperNode's public key with the SuperLink (``flwr supernode register``)."""
    done = subprocess.run(
        [_command("flwr"), "supernode", "register", str(public_key), CONNECTION],
        env=procs.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    (logs / "register.log").open("a").write(done.stdout + done.stderr)
    if done.returncode != 0 or "registered successfully" not in done.stdout:
        raise RuntimeError(
            f"registering SuperNode key {public_key.name} failed:\n{done.stdout[-800:]}{done.stderr[-800:]}"
        )


def _start_federation(
    procs: Processes, folder: Path, root: Path, num_nodes: int, port: int, insecure: bool, timeout: float
) -> None:
    """The SuperLink, then (keys registered) the SuperNodes, each ready."""
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    security: list[str] = ["--insecure"]
    node_security: list[list[str]] = [["--insecure"]] * num_nodes
    if not insecure:
        tls = make_tls(folder / "tls")
        security = ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
        security.append("--enable-supernode-auth")
        keys = [make_node_key(folder / "tls", f"supernode-{i}") for i in range(num_nodes)]
        node_security = [["--root-certificates", str(tls.ca), "--auth-supernode-private-key", str(k)] for k, _ in keys]
    link_cmd = [
        _command("flower-superlink"),
        *security,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    link = procs.start("SuperLink", link_cmd, logs / "superlink.log")
    procs.wait_for("SuperLink", link, logs / "superlink.log", READY_SUPERLINK, timeout)
    if not insecure:
        for _, public in keys:
            _register(procs, public, logs, timeout)
    nodes = []
    for i in range(num_nodes):
        config = f'partition-id={i} num-partitions={num_nodes} privaudit-root="{root}"'
        node_port = free_port()
        cmd = [_command("flower-supernode"), *node_security[i], "--superlink", f"127.0.0.1:{port}"]
        cmd += ["--port", str(node_port), "--node-config", config]
        nodes.append((procs.start(f"SuperNode {i}", cmd, logs / f"supernode-{i}.log"), logs / f"supernode-{i}.log"))
    for i, (proc, log) in enumerate(nodes):
        procs.wait_for(f"SuperNode {i}", proc, log, READY_SUPERNODE, timeout)


def _submit(procs: Processes, app: Path, result: Path, folder: Path, timeout: float) -> Outcome:
    """``flwr run --stream`` the app and read the outcome the ServerApp wrote (``timeout``: for
    the whole run)."""
    log = folder / "logs" / "flwr-run.log"
    run = procs.start("flwr run", [_command("flwr"), "run", str(app), CONNECTION, "--stream"], log)
    try:
        run.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(
            f"the Flower run did not finish within {timeout:.0f} s; its log {log}:\n{tail(log)}"
        ) from None
    if not result.is_file():
        raise RuntimeError(
            f"the Flower run ended without a result (exit code {run.returncode}); its log {log}:\n{tail(log)}"
        )
    outcome = ipc.load(result)  # written by this deployment's ServerApp (weights_only, allowlisted classes)
    result.unlink()  # the result is returned (and the run folder written by the ServerApp)
    if not isinstance(outcome, Outcome):
        raise RuntimeError(f"{result} holds {type(outcome).__name__}, not the ServerApp's outcome")
    return ipc.restore_outcome(outcome)


def deploy(
    root: Path,
    jobs: list[Job],
    num_nodes: int,
    timeout: float,
    insecure: bool = False,
    superlink_port: int | None = None,
    keep: Processes | None = None,
) -> Outcome:
    """Run ``jobs`` on a loopback deployment (see the module docstring); ``root`` holds the shards.
    ``superlink_port`` (default: a free one) is checked before anything starts. ``keep``: a
    `Processes` to record the PIDs in (tests check that they are gone afterwards)."""
    first_out = jobs[0].kwargs.get("out_dir")
    folder = Path(first_out) / "flower" if first_out is not None else root / "deployment"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    port = superlink_port if superlink_port is not None else free_port()
    check_port_free(port)
    jobs_file, result_file = folder / "jobs.pt", folder / "result.pt"
    # the ServerApp (and through each job's "threads" the ClientApps) run with this process's torch
    # thread count: another count sums convolutions in another order (equal to rounding, not bit for bit)
    spec = {"jobs": jobs, "num_nodes": num_nodes, "timeout": timeout, "threads": torch.get_num_threads()}
    ipc.save(spec, jobs_file)
    app = _app(folder, jobs_file, result_file)
    procs = keep if keep is not None else Processes({})
    procs.env = _environment(_home(folder, port, None if insecure else folder / "tls" / "ca.crt"))
    try:
        _start_federation(procs, folder, root, num_nodes, port, insecure, timeout)
        # the ServerApp waits at most `timeout` for each phase's replies; the whole run gets one per phase
        budget = timeout * (3 + sum(2 * job.config.rounds for job in jobs))
        return _submit(procs, app, result_file, folder, budget)
    finally:
        left = procs.stop()
        jobs_file.unlink(missing_ok=True)  # the clients' data and the config: not a run artifact
        if left:
            raise RuntimeError(f"Flower processes still alive after teardown: PIDs {left}")


def deploy_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options `deploy` takes, checked (a ValueError names an unknown one)."""
    known = {"insecure", "superlink_port", "keep"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown flower-deployment option(s) {unknown}; known: {sorted(known)}")
    return options

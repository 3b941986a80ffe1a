"""`run_audit(scenario) -> AuditResult`: the whole audit, stage by stage, cached on disk.

Stages (each cached in the scenario's output directory, so a rerun with one method added only
runs that method, and an interrupted run resumes where it stopped; the caches' keys include a
fingerprint of the code that computes the numbers, `privaudit.code_version`, so an upgrade
recomputes them):

1. φ0: central pre-training on public identities (`federated_core.pretrain`, cached by config hash);
2. data: clients' and unseen test identities (`federated_core.scales.build_federated_data`);
3. methods: each variant trained by the engine into ``runs/<variant>/`` (resumed if interrupted,
   skipped when finished with the same configuration, DP-SGD settings included: a variant with
   ``dp_sgd`` trains with DP-SGD on every client, Abadi et al. 2016, and is keyed ``<method>+dpsgd``
   unless labelled);
4. utility: the generic protocol from the run's evaluation (verification and 1:N on unseen
   identities), and the personalised protocols of FedFR and FedFS on held-out images of each
   client's own identities with each client's own model (`privaudit.personal_stage`, cached in
   ``runs/<variant>/personalised.json``);
5. ledger: formal ε per client from the DP events in the wire log (`privaudit.privacy_stage`): of
   the class information (``formal_epsilon``) and of all uploads, backbone included
   (``formal_epsilon_all``);
6. audits: empirical ε lower bounds of the DPLC release mechanisms (`accountants.dplc_audit`);
7. attacks: from the server's position on what it observed (`attacks.run`);
8. analyses and report: occupancy ratio (Thm 1), ε vs rounds, cos(p, p̂) (Fig. 4) (`privaudit.analyses_stage`),
   results.json; the CLI renders report.html/.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from privaudit.code_version import fingerprint
from privaudit.scenario import MethodSpec, Scenario

DESCRIPTIONS = {
    "fedpe": "FedAvg of the backbone; class embeddings stay on the client (FedGC 'FedPE', PrivacyFace 'φ')",
    "fedpe-fixed": "FedPE with class embeddings frozen at random init (FedGC 'Fixed')",
    "shared-centers": "clients upload raw class centers; the server broadcasts all of them as negatives",
    "fedface": "raw class centers to the server, which spreads them out (FedFace)",
    "fedgc": "raw class embeddings to the server, softmax-regulariser gradient correction (FedGC Alg. 1)",
    "fedgc-cos": "FedGC with the cosine regulariser (FedCos)",
    "fedfr": "backbone + public-class embeddings; HN sampling, contrastive term, DFC personalisation (FedFR)",
    "fedfs": "global backbone only; personal model stays local (FedFS)",
    "privacyface": "backbone + DPLC noisy cluster centers p̂ (PrivacyFace φ+p̂)",
    "privacyface-nonoise": "backbone + clean cluster centers p (PrivacyFace φ+p)",
    "noisy-centers": "backbone + every class center noised with sensitivity 2 (PrivacyFace App. A.2.2, φ+W̃)",
    "privacyface-e2e": "backbone + cluster centers from the end-to-end private DPLC variant",
}
DPLC_METHODS = ("privacyface", "privacyface-e2e", "noisy-centers", "privacyface-nonoise")


def _progress(enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            print(f"[privaudit] {message}", flush=True)

    return say


# ---------------------------------------------------------------------------- stage 1-2


def pretrain_config_for(scenario: Scenario) -> Any:
    from federated_core.pretrain import PretrainConfig, SyntheticSpec

    p, d = scenario.pretrain, scenario.data
    n_eval = 100 if scenario.scale != "tiny" else 16
    return PretrainConfig(
        data=SyntheticSpec(seed=d.seed, resolution=d.resolution, groups=d.groups, difficulty=d.difficulty),
        train_identities=(0, p.identities),
        train_images_per_identity=p.images_per_identity,
        eval_identities=(900_000, 900_000 + n_eval),
        eval_images_per_identity=6,
        eval_genuine_pairs=min(1500, n_eval * 15),
        eval_impostor_pairs=min(3000, n_eval * 30),
        backbone=p.backbone,
        embedding_dim=p.embedding_dim,
        head=p.head,
        epochs=p.epochs,
        seed=scenario.seed,
    )


def imported_phi0_info(scenario: Scenario) -> dict[str, Any] | None:
    """The user's backbone weights (``[model]``), loaded once to check them: architecture name,
    embedding size, file name and SHA-256 (None: φ0 is pre-trained). A file that does not fit the
    architecture, or an ``embedding_dim`` that contradicts it, is a ValueError naming the file."""
    from federated_core.models.weights import load_pretrained_backbone

    m = scenario.model
    if m.weights is None:
        return None
    assert m.backbone is not None  # ModelSpec refuses weights without a backbone
    try:
        _, info = load_pretrained_backbone(
            m.backbone, m.weights, embedding_dim=m.embedding_dim, resolution=scenario.data.resolution
        )
    except ValueError as exc:
        raise ValueError(f"model.weights: {exc}") from exc
    return {
        "name": info["name"],
        "embedding_dim": int(info["embedding_dim"]),
        "sha256": info["weights_sha256"],
        "file": Path(m.weights).name,
    }


def import_phi0(scenario: Scenario, imported: dict[str, Any], cache_dir: Path) -> Path:
    """The user's weights as a privaudit φ0 checkpoint under ``cache_dir`` (rewritten each run:
    importing is cheap and byte-reproducible, so no cached copy is ever trusted)."""
    from federated_core.models.weights import import_as_checkpoint

    m = scenario.model
    assert m.weights is not None and m.backbone is not None
    folder = cache_dir / f"phi0-imported-{imported['sha256'][:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    return import_as_checkpoint(
        m.backbone,
        m.weights,
        folder / "phi0.safetensors",
        embedding_dim=m.embedding_dim,
        resolution=scenario.data.resolution,
    )


def federated_scale_for(scenario: Scenario, test_identities: int | None = None) -> Any:
    """The engine's `FederatedScale` of the scenario; ``test_identities`` overrides
    ``federation.test_identities`` (a folder's split decides how many there are)."""
    from federated_core.scales import FederatedScale

    f = scenario.federation
    n_ids = f.test_identities if test_identities is None else test_identities
    n_test = n_ids * f.test_images_per_identity
    total_genuine = n_ids * f.test_images_per_identity * (f.test_images_per_identity - 1) // 2
    genuine = min(f.genuine_pairs or 1500, total_genuine)
    impostor = min(f.impostor_pairs or 3000, n_test * (n_test - 1) // 2 - total_genuine)
    return FederatedScale(
        name=scenario.scale,
        num_clients=f.num_clients,
        identities_per_client=f.identities_per_client,
        images_per_identity=f.images_per_identity,
        test_identities=n_ids,
        test_images_per_identity=f.test_images_per_identity,
        rounds=f.rounds,
        local_epochs=f.local_epochs,
        batch_size=f.batch_size,
        lr=f.lr,
        partition=f.partition,
        genuine_pairs=max(1, genuine),
        impostor_pairs=max(1, impostor) if f.impostor_pairs else min(3000, max(1, n_test * 2)),
    )


def method_params(spec: MethodSpec, scenario: Scenario) -> dict[str, Any]:
    """The method's hyper-parameters: PrivacyFace variants get the scenario's privacy parameters
    (under a ``paper`` fidelity preset the preset's instead)."""
    params: dict[str, Any] = {}
    if spec.fidelity != "default":
        params["fidelity"] = spec.fidelity
    if spec.name in DPLC_METHODS and spec.fidelity == "default":
        pr = scenario.privacy
        params.update(
            rho=pr.rho,
            max_queries=pr.queries,
            epsilon=pr.epsilon,
            delta=pr.delta,
            calibration=pr.calibration,
            min_cluster_size=pr.threshold_fraction,
        )
    if spec.name == "fedfr":
        # FedFR's public data D_g: public identities rendered by the scenario's generator (the
        # same domain as φ0's pre-training set; public, so it never crosses the wire).
        d = scenario.data
        generator: dict[str, Any] = {"seed": d.seed, "groups": d.groups}
        if d.difficulty is not None:
            generator["difficulty"] = d.difficulty
        params["public_set"] = {
            "identities": [0, min(30, scenario.pretrain.identities)],
            "images_per_identity": 4,
            "start_index": 0,
            "generator": generator,
        }
    params.update(spec.params)
    return params


# ---------------------------------------------------------------------------- stage 3

LATER_STAGE_FILES = ("audit_stage.json", "timings.json", "personalised.json", "audits.json", "attacks.json", "attacks")


def run_key(config: Any, data: Any, phi0_fingerprint: str, engine: str = "inprocess") -> str:
    """What a trained run's numbers depend on: the engine config (without progress bars or the
    absolute φ0 path: φ0 enters by its config fingerprint), the engine that ran it (named only when
    it is not the in-process default, so existing keys stay valid), the data spec, the code."""
    from privaudit.code_version import code_fingerprint

    settings = config.fingerprint_dict()
    settings.pop("initial_backbone", None)
    if engine != "inprocess":
        settings["engine"] = engine
    return fingerprint(
        {"config": settings, "data": data.data_spec, "phi0": phi0_fingerprint, "code": code_fingerprint()}
    )


def train_method(
    spec: MethodSpec,
    scenario: Scenario,
    data: Any,
    scale: Any,
    phi0_path: str,
    pcfg: Any,
    run_dir: Path,
    progress: bool,
    cache: Any,
    phi0_fingerprint: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Train one variant into ``run_dir`` (reused when its files are recorded in the manifest with
    the same key and bytes; resumed when interrupted). Returns the run's metrics and its key."""
    import shutil

    from federated_core.scales import federated_config
    from privaudit.cache import files_under
    from privaudit.engines import run_with_engine

    config = federated_config(
        scale,
        spec.name,
        seed=scenario.seed,
        method_params=method_params(spec, scenario),
        participation=scenario.federation.participation,
        offline_probability=scenario.federation.offline_probability,
        tolerate_client_failures=scenario.federation.tolerate_client_failures,
        max_update_norm=scenario.federation.max_update_norm,
        eval_every=1,
        device=scenario.device,
        progress=progress,
        initial_backbone=phi0_path,
        backbone=pcfg.backbone,
        embedding_dim=pcfg.embedding_dim,
        resolution=pcfg.resolution,
        dp_sgd=None if spec.dp_sgd is None else spec.dp_sgd.to_config(),
    )
    phi0_fingerprint = phi0_fingerprint or pcfg.fingerprint()
    key = run_key(config, data, phi0_fingerprint, scenario.federation.engine)
    stamp = run_dir / "audit_stage.json"
    saved = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if (
        saved.get("key") == key
        and saved.get("finished")
        and cache.fresh("train", key, files_under(run_dir, LATER_STAGE_FILES))
    ):
        return json.loads((run_dir / "metrics.json").read_text()), key
    resume = cache.uses("train") and saved.get("key") == key and not saved.get("finished")
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # another key, a damaged cache or --force: start clean
    cache.forget_under(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "finished": False}))
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "command": "privaudit audit",
                "scale": scale.name,
                "federated": {**config.to_dict(), "initial_backbone": None},
                "phi0": {"fingerprint": phi0_fingerprint},
                "pretrain": pcfg.to_dict(),
            },
            indent=2,
            default=str,
        )
    )
    try:
        result = run_with_engine(
            scenario.federation.engine,
            config,
            data.clients,
            out_dir=run_dir,
            eval_faces=data.test,
            data_spec=data.data_spec,
            resume=resume,
        )
    except ValueError as exc:  # e.g. a method that refuses DP-SGD: say which variant of the scenario
        what = f"{spec.name} with dp_sgd" if spec.dp_sgd is not None else spec.name
        raise ValueError(f"methods: variant {spec.key!r} ({what}) cannot be trained: {exc}") from exc
    cache.record("train", key, files_under(run_dir, LATER_STAGE_FILES))
    stamp.write_text(json.dumps({"key": key, "finished": True}))
    return result.metrics, key


# ---------------------------------------------------------------------------- stage 4


def utility_from_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Final and per-round generic utility from a run's ``metrics.json``."""

    def flat(e: dict[str, Any]) -> dict[str, float]:
        v, i = e.get("verification", {}), e.get("identification", {})
        out = {"accuracy": float(v.get("accuracy", math.nan)), "auroc": float(v.get("auroc", math.nan))}
        for far, tar in v.get("tar_at_far", {}).items():
            out[f"tar@far={float(far):g}"] = float(tar)
        if "rank1" in i and i["rank1"] is not None:
            out["rank1"] = float(i["rank1"])
        for fpir, tpir in i.get("tpir_at_fpir", {}).items():
            out[f"tpir@fpir={float(fpir):g}"] = float(tpir)
        return out

    evaluations = metrics.get("evaluation", {})
    rounds = sorted(int(k) for k in evaluations)
    per_round = [{"round": float(r), **flat(evaluations[str(r)])} for r in rounds]
    final = flat(evaluations[str(rounds[-1])]) if rounds else {}
    return final, per_round


def utility_intervals_from_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The final round's 95% intervals over test identities (`identity_bootstrap`), keyed like the
    utility metrics (``auroc``, ``tar@far=0.001``, ...); empty when the run recorded none."""
    evaluations = metrics.get("evaluation", {})
    if not evaluations:
        return {}
    boot = evaluations[str(max(int(k) for k in evaluations))].get("verification", {}).get("bootstrap")
    if not boot:
        return {}
    return {**{k: v for k, v in boot.items() if k != "intervals"}, "intervals": dict(boot["intervals"])}


def bytes_from_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    rounds = metrics.get("rounds", [])
    if not rounds:
        return {}
    up = [r["bytes"]["uploaded_per_participant"] for r in rounds]
    down = [r["bytes"]["broadcast_per_participant"] for r in rounds]
    return {"client_upload": float(sum(up) / len(up)), "server_broadcast": float(sum(down) / len(down))}


# ---------------------------------------------------------------------------- pre-flight

DPLC_UNIT_METHODS = ("privacyface", "privacyface-e2e", "noisy-centers")


def unit_counts(data: Any) -> Any:
    """`privaudit.privacy_stage.UnitCounts` of the clients' data: the fewest images and identities
    any client holds, and the most images one identity has on a client (group privacy's k)."""
    import torch

    from privaudit.privacy_stage import UnitCounts

    images, identities, most = [], [], 1
    for client in data.clients:
        ids = client.faces.labels
        images.append(int(len(client.faces)))
        _, counts = torch.unique(ids, return_counts=True)
        identities.append(int(counts.numel()))
        most = max(most, int(counts.max()) if counts.numel() else 1)
    return UnitCounts(images=min(images), identities=min(identities), max_images_per_identity=most)


def units_in_play(scenario: Scenario) -> dict[str, list[str]]:
    """unit -> the scenario's variants whose guarantees are stated per that unit."""
    units: dict[str, list[str]] = {}
    for spec in scenario.methods:
        if spec.name in DPLC_UNIT_METHODS:
            units.setdefault("class-center", []).append(spec.key)
        if spec.dp_sgd is not None:
            units.setdefault("image", []).append(spec.key)
            units.setdefault("identity", []).append(spec.key)
    return units


def check_delta_against_units(scenario: Scenario, counts: Any) -> list[str]:
    """Refuse δ ≥ 1/n (n = the fewest units a client holds under a guarantee's unit) with a
    ValueError naming δ, n and the unit; with ``privacy.allow_large_delta`` return flags instead."""
    delta = scenario.privacy.delta
    problems = []
    for unit, variants in units_in_play(scenario).items():
        n = counts.smallest(unit)
        if delta >= 1.0 / n:
            problems.append(
                f"privacy.delta = {delta:g} ≥ 1/n = 1/{n}, n = the fewest {unit} records a client holds "
                f"(unit of {', '.join(variants)}): releasing one such record in the clear satisfies it"
            )
    if problems and not scenario.privacy.allow_large_delta:
        raise ValueError(
            "; ".join(problems) + ". Set a smaller privacy.delta (default 1e-5), or "
            "privacy.allow_large_delta = true to run with every affected guarantee flagged"
        )
    return problems


def check_method_params(scenario: Scenario) -> None:
    """Build every variant's method object now (unknown or bad hyper-parameters are a ValueError
    naming the variant) rather than after φ0 has trained."""
    from types import SimpleNamespace

    from federated_core.methods import get_method

    for spec in scenario.methods:
        try:
            method = get_method(spec.name, **method_params(spec, scenario))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"methods: variant {spec.key!r} ({spec.name}): {exc}") from exc
        refuse = getattr(method, "_refuse_dp", None)  # methods whose DP-SGD refusal needs no client data
        if spec.dp_sgd is not None and refuse is not None:
            try:
                refuse(SimpleNamespace(dp_sgd=spec.dp_sgd.to_config()))
            except ValueError as exc:
                raise ValueError(
                    f"methods: variant {spec.key!r} ({spec.name} with dp_sgd) cannot be trained: {exc}"
                ) from exc


# ---------------------------------------------------------------------------- the pipeline


def _observers(wire: Any) -> dict[str, list[str]]:
    observers = {"server": sorted({m.kind for m in wire.observed_by("server") if m.sender != "server"})}
    some_client = next((m.sender for m in wire if m.sender.startswith("client:")), None)
    if some_client:
        observers["other clients"] = sorted({m.kind for m in wire.observed_by(some_client) if m.sender == "server"})
    return observers


def _account(
    spec: MethodSpec, scenario: Scenario, wire: Any, counts: Any, rounds: int, run_dir: Path, cache: Any, key: str
) -> tuple[Any, list[Any], list[str]]:
    """Ledger, audits of the deployed mechanism, and refutations folded into the guarantees."""
    from privaudit.audit_stage import dplc_audits
    from privaudit.privacy_stage import account_run, mark_refuted
    from reports.schema import AuditFinding

    pr = scenario.privacy
    privacy = account_run(wire, pr.delta, pr.accountants, rounds, counts)
    found, skipped = dplc_audits(spec.name, wire, pr.audit_trials, scenario.seed, cache, run_dir / "audits.json", key)
    audits = [AuditFinding(**f) for f in found]
    mark_refuted(
        privacy,
        [
            f"{a.name}: ε ≥ {a.epsilon_lower_bound:.3g} against the claimed {a.claimed_epsilon:.3g} "
            f"({a.scope}, δ = {a.delta:.2g})"
            for a in audits
            if a.refutes_claim
        ],
    )
    if (
        spec.dp_sgd is not None
        and spec.dp_sgd.target_epsilon is not None
        and spec.dp_sgd.delta is not None
        and not math.isclose(spec.dp_sgd.delta, pr.delta)
    ):
        privacy.flags.append(
            f"dp_sgd calibrated its noise for δ = {spec.dp_sgd.delta:g}; the accountants "
            f"report ε at the audit's δ = {pr.delta:.3g}"
        )
    return privacy, audits, skipped


def _summary(privacy: Any, audits: list[Any]) -> Any:
    from reports.schema import PrivacySummary

    return PrivacySummary(
        delta=privacy.delta,
        formal_epsilon=privacy.centers_epsilon,
        formal_epsilon_all=privacy.everything_epsilon,
        epsilon_per_round=privacy.centers_per_round,
        per_party=privacy.per_party,
        empirical=audits,
        flags=privacy.flags,
        guarantee=privacy.guarantee,
        guarantees=[g.to_dict() for g in privacy.guarantees],
        per_person=dict(privacy.per_person),
    )


def _run_flags(metrics: dict[str, Any]) -> list[str]:
    """Clients that failed or uploads that were rejected, as the method row's flags."""
    flags = []
    failures = metrics.get("client_failures") or {}
    if failures.get("count"):
        rounds = ", ".join(
            f"round {r}: {', '.join(map(str, c))}" for r, c in sorted(failures.get("rounds", {}).items())
        )
        flags.append(
            f"{failures['count']} client update(s) failed and were dropped "
            f"(federation.tolerate_client_failures): {rounds}"
        )
    rejected = [(i + 1, r) for i, rnd in enumerate(metrics.get("rounds", [])) for r in rnd.get("rejected", [])]
    for round_no, r in rejected:
        flags.append(
            f"round {round_no}: the server rejected {r.get('client')}'s {r.get('kind')} upload: {r.get('reason')}"
        )
    return flags


def _method(spec: MethodSpec, scenario: Scenario, ctx: dict[str, Any], timings: dict[str, float]) -> Any:
    """Train, evaluate, account, audit and attack one variant: its `MethodResult`."""
    from federated_core.engine import WireLog
    from privaudit.attack_stage import attack_run
    from privaudit.personal_stage import personalised_utility
    from reports.schema import AttackFinding, MethodResult
    from reports.verdict import verdict_of

    out, data, scale = scenario.out_dir, ctx["data"], ctx["scale"]
    run_dir = out / "runs" / spec.key
    since = len(ctx["cache"].events)
    t = time.perf_counter()
    metrics, key = train_method(
        spec, scenario, data, scale, ctx["phi0"], ctx["pcfg"], run_dir, ctx["progress"], ctx["cache"], ctx["phi0_key"]
    )
    ctx["run_keys"][spec.key] = key
    timings[f"train:{spec.key}"] = time.perf_counter() - t
    utility, per_round = utility_from_metrics(metrics)
    protocol_intervals: dict[str, list[float]] = {}
    if ctx["protocols"]:
        from federated_core.models import load_backbone
        from privaudit.protocols import protocol_utility

        final, _ = load_backbone(run_dir / "checkpoint" / "backbone.safetensors")
        values, protocol_intervals = protocol_utility(final, ctx["protocols"], scenario.device)
        utility.update(values)
    t = time.perf_counter()
    personal = personalised_utility(
        spec, scenario, data, run_dir, heldout=ctx["heldout"], progress=ctx["progress"], cache=ctx["cache"]
    )
    timings[f"personal:{spec.key}"] = time.perf_counter() - t
    wire = WireLog.load(run_dir)
    shares = sorted({m.kind for m in wire if m.sender.startswith("client:")})
    t = time.perf_counter()
    privacy, audits, skipped = _account(spec, scenario, wire, ctx["counts"], scale.rounds, run_dir, ctx["cache"], key)
    timings[f"audit:{spec.key}"] = time.perf_counter() - t
    # one simulated probe, on the first variant that shares nothing but an exact (non-DP-SGD) backbone
    probe = not ctx["probed"] and shares == ["backbone"] and spec.dp_sgd is None
    ctx["probed"] = ctx["probed"] or probe
    t = time.perf_counter()
    found, failures = attack_run(scenario, run_dir, shares, probe, out, ctx["cache"], key)
    timings[f"attacks:{spec.key}"] = time.perf_counter() - t
    description = DESCRIPTIONS.get(spec.name, spec.name)
    params = {
        "method": spec.name,
        **{k: v for k, v in method_params(spec, scenario).items() if v is not None},
        "personalised_model": personal.model,
    }
    if spec.dp_sgd is not None:
        description += f"; {spec.dp_sgd.describe()} on every client"
        params["dp_sgd"] = {k: v for k, v in dataclasses.asdict(spec.dp_sgd).items() if v is not None}
    result = MethodResult(
        name=spec.key,
        description=description,
        shares=shares,
        observers=_observers(wire),
        utility=utility,
        personalised_utility=personal.values,
        utility_per_round=per_round,
        bytes_per_round=bytes_from_metrics(metrics),
        params=params,
        privacy=_summary(privacy, audits),
        attacks=[AttackFinding(**f) for f in found],
        flags=_run_flags(metrics)
        + _method_flags(metrics)
        + [f"audit not run: {s}" for s in skipped]
        + [f"attacks: {f}" for f in failures]
        + ctx["delta_flags"],
        fidelity=fidelity_of(spec, metrics),
        utility_intervals=utility_intervals_from_metrics(metrics)
        | (
            {"protocols": {"unit": "fold of the protocol file", "intervals": protocol_intervals}}
            if ctx["protocols"]
            else {}
        ),
    )
    result.privacy.verdict = verdict_of(result).to_dict()
    _progress(ctx["progress"])(f"  {spec.key}: {ctx['cache'].summary(since) or 'nothing cached'}")
    return result


def fidelity_of(spec: MethodSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's fidelity preset, its note and deviations (from the method's recorded hyper-parameters)."""
    from federated_core.methods import fidelity_note

    hp = _hyperparameters(metrics)
    preset = str(hp.get("fidelity", "default"))
    return {
        "preset": preset,
        "note": fidelity_note(spec.name, preset),
        "deviations": dict(hp.get("fidelity_deviations") or {}),
    }


def _hyperparameters(metrics: dict[str, Any]) -> dict[str, Any]:
    return (metrics.get("method") or {}).get("hyperparameters") or {}


def _method_flags(metrics: dict[str, Any]) -> list[str]:
    """What the method's own settings disclose beyond its messages' DP events."""
    hp = _hyperparameters(metrics)
    flags = []
    if hp.get("leaks_public_selection_count"):
        flags.append(
            f"FedAvg weights '{hp.get('fedavg_weight')}' (FedFR official code) tell the server, without "
            "noise, how many public images each client selected as resembling its own faces"
        )
    return flags


def run_audit(
    scenario: Scenario | None = None,
    progress: bool = True,
    force: tuple[str, ...] = (),
    use_cache: bool = True,
    report: bool = True,
) -> Any:
    """Run the audit of ``scenario`` (default: `Scenario.demo()`) once per seed of
    `Scenario.seed_list`. With one seed, see `run_one_seed`. With several, each seed's audit goes
    to ``OUT/seeds/seed-<s>/`` and ``OUT/results.json`` is the first seed's result with a
    ``repeats`` block: per-seed values, means with t intervals over seeds, and paired comparisons
    with ``compare_to`` (`privaudit.comparisons`). Then, as ``privaudit audit`` does, it writes
    ``OUT/report.html``, ``OUT/report.md`` and ``OUT/figures/`` (``report=False``: results only)."""
    scenario = scenario or Scenario.demo()
    result = _audit_all_seeds(scenario, progress, force, use_cache)
    if report:
        from reports.html import write_report

        write_report(result, scenario.out_dir)
    return result


def _audit_all_seeds(scenario: Scenario, progress: bool, force: tuple[str, ...], use_cache: bool) -> Any:
    """Every seed's audit, the repeats block over seeds and the claims; results.json saved."""
    import dataclasses

    from privaudit.comparisons import paired_comparisons, per_seed_values, summarise
    from reports.schema import save_results

    seeds = scenario.seed_list()
    if len(seeds) == 1:
        result = run_one_seed(dataclasses.replace(scenario, seed=seeds[0]), progress, force, use_cache)
        result.claims = _claims(scenario, per_seed_values([result]), 1)
        save_results(result, scenario.out_dir)
        return result
    results: list[Any] = []
    for s in seeds:
        _progress(progress)(f"seed {s} ({len(results) + 1}/{len(seeds)})")
        one = dataclasses.replace(
            scenario, seed=s, seeds=None, repeats=1, out=str(scenario.out_dir / "seeds" / f"seed-{s}")
        )
        results.append(run_one_seed(one, progress, force, use_cache))
    values = per_seed_values(results)
    main = results[0]
    main.scenario = results_scenario(scenario)
    main.title = f"privaudit audit: {scenario.name} ({len(seeds)} seeds)"
    main.timings = {f"seed {s}: {k}": v for s, r in zip(seeds, results) for k, v in r.timings.items()}
    main.repeats = {
        "seeds": seeds,
        "unit": "seed",
        "baseline": scenario.compare_to,
        "per_seed": values,
        "summary": summarise(values),
        "comparisons": paired_comparisons(values, scenario.compare_to),
    }
    main.claims = _claims(scenario, values, len(seeds))
    save_results(main, scenario.out_dir)
    return main


def results_scenario(scenario: Scenario) -> dict[str, Any]:
    """The scenario as recorded in results.json: everything but the output folder (the file lives
    there; an absolute path inside it would change with every move and between two same-seed runs)."""
    return {k: v for k, v in scenario.to_dict().items() if k != "out"}


def _claims(scenario: Scenario, values: dict[str, dict[str, list[float]]], seeds: int) -> list[dict[str, Any]]:
    """The papers' claims checked on this audit's variants (`privaudit.claims`)."""
    from privaudit.claims import evaluate_claims, setting_of

    return evaluate_claims(values, scenario.federation.partition, setting_of(scenario.to_dict(), seeds))


def _phi0_stage(
    scenario: Scenario, pcfg: Any, imported: dict[str, Any] | None, cache: Any, progress: bool
) -> tuple[Path | None, str, list[str]]:
    """Stage 2: φ0 imported from ``[model]`` weights, else pre-trained (or its verified cache).
    Returns its checkpoint path, the key it enters the run keys with, and cache problems (flags)."""
    import shutil

    from federated_core.pretrain import pretrain

    say, out = _progress(progress), scenario.out_dir
    if imported is not None:
        say(f"stage 2/8: φ0 = your {imported['name']} weights {imported['file']} (sha256 {imported['sha256'][:12]})")
        return import_phi0(scenario, imported, out / "cache"), f"imported-{imported['sha256']}", []
    say(f"stage 2/8: φ0 on {pcfg.train_identities[1]} public identities")
    if not cache.uses("phi0"):
        shutil.rmtree(out / "cache" / f"phi0-{pcfg.fingerprint()}", ignore_errors=True)
    phi0 = pretrain(pcfg, cache_dir=out / "cache", device=scenario.device, progress=progress)
    say(f"  φ0 {'from the cache (checksums verified)' if phi0.cached else 'trained'}")
    return phi0.path, pcfg.fingerprint(), phi0.cache_problems


def data_stage(scenario: Scenario, heldout_per: int, progress: bool) -> tuple[Any, Any, Any]:
    """Stage 1: ``(FederatedData, φ0's PretrainConfig, FederatedScale)``: synthetic faces rendered by
    the generator, or the scenario's folder checked, split and read (`privaudit.folder_data`; the
    split and the source's record go into the data spec, and ``data.json`` of the output folder)."""
    from federated_core.scales import build_federated_data

    say = _progress(progress)
    pcfg = pretrain_config_for(scenario)
    if scenario.data.source == "synthetic":
        scale = federated_scale_for(scenario)
        say(f"stage 1/8: data for {scale.num_clients} clients x {scale.identities_per_client} identities")
        return build_federated_data(scale, pcfg.data, seed=scenario.seed), pcfg, scale
    from privaudit.folder_data import folder_data, open_folder, split_for

    say(f"stage 1/8: checking the face folder {scenario.data.path}")
    source, alignment = open_folder(scenario, scenario.out_dir / "cache", progress)
    split = split_for(scenario, source)
    data, pcfg = folder_data(scenario, source, split, heldout_per, pcfg)
    data.data_spec["alignment"] = alignment
    scale = federated_scale_for(scenario, test_identities=int(split["test"].numel()))
    counts = split.record["counts"]
    say(f"  {source.eligible} usable identities: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return data, pcfg, scale


def data_record(data: Any) -> dict[str, Any] | None:
    """What results.json says about a folder's data (None for synthetic faces): the split's counts and
    the rule behind each, the identities excluded and the files skipped or converted (first 20 named,
    all counted), the photos without a face when aligned."""
    spec = data.data_spec
    if spec.get("source") != "folder":
        return None
    source, split = spec["source_record"], spec["split"]
    return {
        "root": spec["root"],
        "fingerprint": spec["fingerprint"],
        "identities": {"folders": source["identity_folders"], "usable": source["identities"]},
        "split": {"counts": split["counts"], "rules": split["rules"], "seed": split["seed"]},
        "excluded": {"count": len(source["excluded"]), "first": source["excluded"][:20]},
        "unreadable_skipped": {
            "count": len(source["unreadable_skipped"]),
            "first": source["unreadable_skipped"][:20],
        },
        "skipped_files": source["skipped"],
        "symlink_problems": source["links"],
        "converted_to_rgb": source["converted_to_rgb"],
        "duplicates": source["duplicates"],
        "alignment": spec.get("alignment"),
    }


def run_one_seed(scenario: Scenario, progress: bool = True, force: tuple[str, ...] = (), use_cache: bool = True) -> Any:
    """Run every stage of the audit described by ``scenario`` for its one seed.

    Pre-flight first (data rendered in memory, δ checked against the privacy units a client holds,
    every method built): a refused scenario raises ValueError and leaves no files behind. Stages
    reuse what the output folder's manifest records with the same key and bytes
    (`privaudit.cache`); ``force`` names stages to recompute, ``use_cache=False`` recomputes all."""
    from privaudit.analyses_stage import audit_analyses
    from privaudit.cache import StageCache
    from privaudit.personal_stage import HeldOut, heldout_images_per_identity
    from privaudit.protocols import load_protocols, training_overlap_flags
    from reports.schema import AuditResult, save_results

    scenario = scenario or Scenario.demo()
    say = _progress(progress)
    out = scenario.out_dir
    timings: dict[str, float] = {}
    t = time.perf_counter()
    heldout_per = heldout_images_per_identity(scenario)  # a scale without one is refused here, before φ0
    data, pcfg, scale = data_stage(scenario, heldout_per, progress)
    protocols = load_protocols(scenario, progress)  # a pairs file naming a missing image stops here
    protocol_flags = training_overlap_flags(scenario, data)
    counts = unit_counts(data)
    delta_flags = check_delta_against_units(scenario, counts)
    check_method_params(scenario)
    imported = imported_phi0_info(scenario)  # the user's weights, checked before any file is written
    if imported is not None:
        pcfg = dataclasses.replace(pcfg, backbone=imported["name"], embedding_dim=imported["embedding_dim"])
    timings["data"] = time.perf_counter() - t
    cache = StageCache(out, force=force, enabled=use_cache)  # checks --force names before any file is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_text(json.dumps(scenario.to_dict(), indent=2))

    t = time.perf_counter()
    phi0_path, phi0_key, phi0_problems = _phi0_stage(scenario, pcfg, imported, cache, progress)
    timings["phi0"] = time.perf_counter() - t
    ctx = {
        "data": data,
        "scale": scale,
        "pcfg": pcfg,
        "phi0": str(phi0_path),
        "phi0_key": phi0_key,
        "progress": progress,
        "counts": counts,
        "heldout": HeldOut(data, heldout_per),
        "delta_flags": delta_flags,
        "probed": False,
        "cache": cache,
        "run_keys": {},
        "protocols": protocols,
    }

    methods, runs = [], {}
    for i, spec in enumerate(scenario.methods, 1):
        say(f"stages 3-7/8: method {i}/{len(scenario.methods)} {spec.key} (train, utility, ledger, audits, attacks)")
        methods.append(_method(spec, scenario, ctx, timings))
        runs[spec.key] = out / "runs" / spec.key

    t = time.perf_counter()
    say("stage 8/8: analyses (occupancy ratio, ε vs rounds, cos(p, p̂))")
    analyses = audit_analyses(
        scenario, runs, pcfg.embedding_dim, scenario.privacy.delta, out / "cache", cache, ctx["run_keys"]
    )
    timings["analyses"] = time.perf_counter() - t
    record = data_record(data)
    if record is not None:
        analyses.extra["data"] = record
    cache_flags = [f"cache: φ0 failed its checksum and was retrained: {p}" for p in phi0_problems]
    cache_flags += [f"cache: {p}" for p in cache.problems]
    result = AuditResult(
        methods=methods,
        scenario=results_scenario(scenario),
        flags=cache_flags + protocol_flags,
        timings=timings,
        analyses=analyses,
        title=f"privaudit audit: {scenario.name}",
    )
    save_results(result, out)
    return result

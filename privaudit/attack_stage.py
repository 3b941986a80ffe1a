"""Attacks from the server's position on each trained run (`attacks.run.run_attacks`), turned
into `reports.schema.AttackFinding` records.

k-NN identity / membership attack and embedding inversion run on every center-like kind the
server observed (plus diffprivlib's DP k-means on the true centers as a sanitised alternative);
gradient inversion runs on a client's logged backbone updates (first and last round,
`attacks.logged_update`) of every method that uploads a backbone, and one simulated probe
(`attacks.gradient`, Geiping et al.'s assumptions) on the first method that shares nothing but
the backbone. The independent evaluation model is trained once and cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def attack_config(scenario: Any, attacks: tuple[str, ...], simulated_probe: bool = True) -> Any:
    from attacks.run import AttackRunConfig

    a = scenario.attacks
    tiny = scenario.scale == "tiny"
    return AttackRunConfig(
        observer="server",
        attacks=attacks,
        gallery_distractors=a.gallery_distractors,
        public_identities=a.decoder_identities,
        public_images_per_identity=4,
        decoder_epochs=max(1, a.decoder_steps // 100),
        decoder_base_channels=32 if tiny else 64,
        max_inverted=20 if tiny else 100,
        gradient_clients=1,
        gradient_images=a.gradient_batch_size,
        gradient_iterations=a.gradient_iterations,
        gradient_restarts=a.gradient_restarts,
        gradient_tv_weight=float(a.gradient_tv_weight),
        gradient_local_steps=(1,),
        gradient_dp_noise_multipliers=(),
        gradient_logged_iterations=a.gradient_logged_iterations,
        gradient_logged_restarts=a.gradient_logged_restarts,
        gradient_logged_dummies=a.gradient_logged_dummies,
        gradient_simulated=simulated_probe,
        membership_nonmembers=a.membership_nonmembers,
        membership_shadows=a.membership_shadows,
        n_bootstrap=50 if tiny else 200,
        seed=scenario.seed,
        device=scenario.device,
        progress=False,
    )


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _intervals_of(r: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Every ``<metric>_ci`` pair of finite numbers in an attack result, keyed by the metric (the
    raw rate's interval over units, ``top1_unit_ci``, is kept as ``top1_unit``)."""
    out = {}
    for name, ci in r.items():
        if (
            name.endswith("_ci")
            and isinstance(ci, (list, tuple))
            and len(ci) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ci)
        ):
            out[name.removesuffix("_ci")] = (float(ci[0]), float(ci[1]))
    return out


def findings_from_report(report: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """Plain dicts of `AttackFinding` fields from an `AttackReport.to_dict()`."""
    findings = []
    for r in report.get("knn", []):
        metrics = _numbers({k: v for k, v in r.items() if k not in ("num_gallery_identities",)})
        intervals = _intervals_of(r)
        for t in r.get("tpr_at_fpr", []):
            if t.get("ci_low") is not None:
                intervals[f"tpr@fpr={t['target_fpr']:g}"] = (float(t["ci_low"]), float(t["ci_high"]))
        roc = None
        if r.get("roc_fpr") is not None and len(r["roc_fpr"]) == len(r.get("roc_tpr") or []):
            roc = {"fpr": [float(x) for x in r["roc_fpr"]], "tpr": [float(x) for x in r["roc_tpr"]]}
        findings.append(
            {
                "attack": "knn",
                "observer": r.get("observer", "server"),
                "target_kind": r["kind"],
                "metrics": metrics,
                "intervals": intervals,
                "roc": roc,
                "success_metric": "top1" if "top1" in metrics else None,
                "notes": "; ".join(r.get("notes") or []),
            }
        )
    for r in report.get("inversion", []):
        metrics = _numbers(r)
        rel = _relative(r.get("grid"), out_dir)
        findings.append(
            {
                "attack": "inversion",
                "observer": r.get("observer", "server"),
                "target_kind": r["kind"],
                "metrics": metrics,
                "image_grid": rel,
                "intervals": _intervals_of(r),
                "success_metric": "mean_rank1" if "mean_rank1" in metrics else None,
                "notes": str(r.get("evaluator", "")),
            }
        )
    for r in report.get("gradient", []):
        metrics = _numbers(r)
        findings.append(
            {
                "attack": "gradient",
                "observer": "server",
                "target_kind": "backbone",
                "metrics": metrics,
                "success_metric": "rank1" if "rank1" in metrics else None,
                "notes": f"{r.get('attack', '')} on {r.get('client', '')} ({r.get('model_state', '')} model): "
                f"{r.get('threat_model', '')}",
            }
        )
    for r in report.get("gradient_logged", []):
        metrics = _numbers({k: v for k, v in r.items() if k not in ("round",)})
        findings.append(
            {
                "attack": "gradient",
                "observer": "server",
                "target_kind": "backbone_update",
                "metrics": metrics,
                # no interval over the dummies of one optimisation (correlated, not independent trials):
                # the unit is the client update, judged against the other clients (permutation_p)
                "intervals": {},
                "image_grid": _relative(r.get("grid"), out_dir),
                "success_metric": "rank1" if "rank1" in metrics else None,
                "notes": f"Inverting Gradients on {r.get('client', '')}'s logged update of round {r.get('round')} "
                "(grid: each reconstruction below the client's real training image nearest to it); one unit (the "
                f"update): attacked client ranked {r.get('attacked_rank')} of {r.get('units')} clients, permutation "
                f"p = {r.get('permutation_p')}: {r.get('threat_model', '')}",
            }
        )
    findings += [_membership_finding(r) for r in report.get("membership", [])]
    return findings


def _membership_finding(r: dict[str, Any]) -> dict[str, Any]:
    """One membership game (`attacks.membership_attack.MembershipResult.to_dict`) as an attack finding:
    TPR at each supported FPR beside its oracle, null and normalised success (intervals over clients)."""
    metrics: dict[str, float] = {"auroc": float(r["lira"]["auroc"]), "num_observations": float(r["members"])}
    metrics["nonmembers"] = float(r["nonmembers"])
    intervals: dict[str, tuple[float, float]] = {}
    supported, notes = [], [r.get("threat_model", "")]
    for key, entry in r["lira"]["at_fpr"].items():
        name = f"tpr@fpr={key}"
        if not entry.get("supported"):
            notes.append(f"{name}: {entry.get('unsupported_reason')}")
            continue
        supported.append((float(key), name))
        metrics[name] = float(entry["tpr"])
        metrics[f"global_threshold_{name}"] = float(r["global_threshold"]["at_fpr"][key]["tpr"])
        n = r.get("normalised", {}).get(key)
        if n is None:
            continue
        for part in ("oracle", "null", "normalised"):
            metrics[f"{part}_{name}"] = float(n[part])
            intervals[f"{part}_{name}"] = (float(n[f"{part}_ci"][0]), float(n[f"{part}_ci"][1]))
        intervals[name] = (float(n["raw_ci"][0]), float(n["raw_ci"][1]))
    notes += list(r.get("notes") or [])
    return {
        "attack": "membership",
        "observer": r.get("observer", "server"),
        "target_kind": r["kind"],
        "metrics": metrics,
        "intervals": intervals,
        "success_metric": min(supported)[1] if supported else None,
        "notes": "; ".join(n for n in notes if n),
    }


def _relative(path: str | None, out_dir: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return None


def attack_run(
    scenario: Any,
    run_dir: Path,
    shares: list[str],
    simulated_probe: bool,
    out: Path,
    cache: Any = None,
    run_key: str = "",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Attack one run (cached in ``run_dir/attacks.json``); ``simulated_probe`` adds the simulated
    gradient-inversion probe to the logged-update inversions. Returns the findings and the
    attacks that failed (each a sentence naming the attack and the error: flags for the report).
    Cached through ``cache`` (a `privaudit.cache.StageCache`) under a key of the trained run
    (``run_key``), the attack settings and the code; the image grids are recorded with it."""
    from attacks.run import run_attacks
    from attacks.views import CENTER_KINDS  # the one list of center-like kinds
    from privaudit.cache import files_under
    from privaudit.code_version import code_fingerprint, fingerprint

    center_attacks = ("knn", "inversion", "membership")
    wanted = [a for a in scenario.attacks.run if a in center_attacks] if set(shares) & set(CENTER_KINDS) else []
    if "backbone" in shares and "gradient" in scenario.attacks.run:
        wanted.append("gradient")
    if not wanted:
        return [], []
    path, grids = run_dir / "attacks.json", run_dir / "attacks"
    config = attack_config(scenario, tuple(wanted), simulated_probe)
    settings = {k: v for k, v in config.__dict__.items() if k not in ("progress",)}
    key = fingerprint({"code": code_fingerprint(), "run": run_key, **settings})
    saved = cache.load_json("attacks", key, path) if cache is not None else None
    if saved is not None and cache.fresh("attacks", key, [run_dir / g for g in saved["grids"]] or [path]):
        return saved["findings"], saved.get("failures", [])
    report = run_attacks(run_dir, config, out_dir=grids, cache_dir=out / "cache" / "attacks")
    findings = findings_from_report(report.to_dict(), out)
    failures = list(report.failures)
    if cache is not None:
        written = files_under(grids) if grids.is_dir() else []
        if written:
            cache.record("attacks", key, written)
        cache.save_json(
            "attacks",
            key,
            path,
            {
                "key": key,
                "findings": findings,
                "failures": failures,
                "grids": [p.relative_to(run_dir).as_posix() for p in written],
            },
        )
    return findings, failures

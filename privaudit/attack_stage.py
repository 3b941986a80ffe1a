"""Attacks from the server's position on each trained run (`attacks.run.run_attacks`), turned
into `reports.schema.AttackFinding` records.

k-NN identity / membership attack and embedding inversion run on every center-like kind the
server observed (plus diffprivlib's DP k-means on the true centers as a sanitised alternative);
gradient inversion runs on a client's logged backbone updates (first and last round,
`attacks.logged_update`) of every method that uploads a backbone, and one simulated probe
(`attacks.gradient`, Geiping et al.'s assumptions) on the first method that shares nothing but
the backbone. The independent evaluation model is trained once and cached.

On a run trained on a face folder (``[data] source = "folder"``), `attacks.run.run_attacks` takes
every identity it needs from the run's identity split (distractors, the attacker's public
identities, the evaluators' own) and never reuses a client's training or held-out images; the
findings carry its notes on those roles and on any shortfall, the shortfalls that weaken a number
are flagged as failures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def attack_config(scenario: Any, attacks: tuple[str, ...], simulated_probe: bool = True) -> Any:
    """The `attacks.run.AttackRunConfig` of ``scenario.attacks`` at its scale (``attacks``: the
    families to run on this method; ``simulated_probe``: add the simulated gradient probe)."""
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
        decoder_lr_step_epochs=max(1, a.decoder_steps // 200),  # ÷10 half-way through the budget
        decoder_objective=a.decoder_objective,
        decoder_holdout_fraction=float(a.decoder_holdout_fraction),
        decoder_patience=a.decoder_patience,
        decoder_base_channels=32 if tiny else 64,
        whitebox=a.whitebox,
        whitebox_iterations=a.whitebox_iterations,
        whitebox_restarts=a.whitebox_restarts,
        evaluator_architecture=a.evaluator_architecture,
        gradient_granted_labels_row=a.gradient_granted_labels_row,
        gradient_bn_prior_weight=float(a.gradient_bn_prior_weight),
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
        gradient_logged_epoch_prior=a.gradient_logged_epoch_prior,
        gradient_logged_epoch_prior_weight=float(a.gradient_logged_epoch_prior_weight),
        gradient_logged_aggregate=a.gradient_logged_aggregate,
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
    curve = _decoder_curve_metrics(report.get("decoder"))
    for r in report.get("inversion", []):
        findings.append(_inversion_finding(r, out_dir, curve, _decoder_notes(report)))
    for r in report.get("whitebox", []):
        findings.append(_inversion_finding(r, out_dir, {}, _whitebox_notes(r, report)))
    for r in report.get("gradient", []):
        findings += _probe_findings(r)
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
                "notes": _logged_notes(r),
            }
        )
    findings += [_membership_finding(r) for r in report.get("membership", [])]
    return _with_folder_notes(findings, report)


def _logged_notes(r: dict[str, Any]) -> str:
    """The notes of a logged-update finding: what was inverted, its one unit and its null."""
    if r.get("client") == "aggregate":
        return (
            f"Inverting Gradients on the aggregate of round {r.get('round')}'s updates of "
            f"{', '.join(r.get('participants') or [])} (grid: each reconstruction below the participants' real "
            f"training image nearest to it); one unit (the aggregate): the participants ranked "
            f"{r.get('attacked_rank')} of {r.get('units')} groups (the others as many non-member identities), "
            f"permutation p = {r.get('permutation_p')}: {r.get('threat_model', '')}"
        )
    return (
        f"Inverting Gradients on {r.get('client', '')}'s logged update of round {r.get('round')} "
        "(grid: each reconstruction below the client's real training image nearest to it); one unit (the "
        f"update): attacked client ranked {r.get('attacked_rank')} of {r.get('units')} clients, permutation "
        f"p = {r.get('permutation_p')}: {r.get('threat_model', '')}"
    )


def _with_folder_notes(findings: list[dict[str, Any]], report: dict[str, Any]) -> list[dict[str, Any]]:
    """On a face-folder run (the report's ``data`` record), every finding's notes end with the report's
    notes on the folder: which split part played which role, and the caps and shortfalls in identities
    and images (so a reader of results.json sees them beside each number). Synthetic runs: unchanged."""
    if not report.get("data"):
        return findings
    folder = [n for n in report.get("notes", []) if n.startswith("face folder")]
    for f in findings:
        f["notes"] = "; ".join(n for n in [f.get("notes", ""), *folder] if n)
    return findings


def _inversion_finding(r: dict[str, Any], out_dir: Path, curve: dict[str, float], notes: list[str]) -> dict[str, Any]:
    """One inversion row (the decoder's or the white-box attack's) as an attack finding: its scores
    with their ceilings, the second evaluator's verdicts, and (the decoder's) training curve."""
    metrics = {**_numbers(r), **curve}
    return {
        "attack": "inversion",
        "observer": r.get("observer", "server"),
        "target_kind": r["kind"],
        "metrics": metrics,
        "image_grid": _relative(r.get("grid"), out_dir),
        "intervals": _intervals_of(r),
        "success_metric": "mean_rank1" if "mean_rank1" in metrics else None,
        "notes": "; ".join(n for n in [*notes, str(r.get("evaluator", ""))] if n),
    }


def _decoder_curve_metrics(decoder: dict[str, Any] | None) -> dict[str, float]:
    """The decoder's per-epoch training curve as finding metrics (`reports.tables.decoder_curve_key`:
    held-out feature cosine and L1, training L1, feature loss, D's and G's adversarial losses)."""
    from reports.tables import DECODER_CURVE_FIELDS, decoder_curve_key

    out = {}
    for row in (decoder or {}).get("curve") or []:
        for name in DECODER_CURVE_FIELDS:
            v = row.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[decoder_curve_key(name, int(row["epoch"]))] = float(v)
    return out


def _decoder_notes(report: dict[str, Any]) -> list[str]:
    """What a decoder inversion finding says of its decoder and of the second evaluator."""
    d = report.get("decoder") or {}
    notes = []
    if d:
        stop = ""
        if d.get("best_epoch") is not None:
            how = f"stopped by patience {d.get('patience')}" if d.get("stopped_early") else "budget reached"
            stop = f", weights of the best held-out epoch {d['best_epoch']} ({how})"
        notes.append(
            f"decoder objective {d.get('objective')!r}: {d.get('epochs_done')} of {d.get('epoch_budget')} epochs on the "
            f"attacker's public identities, {d.get('heldout_identities')} held out{stop}; a lower bound"
        )
    if report.get("second_evaluator"):
        notes.append(f"second evaluator: {report['second_evaluator']}")
    return notes


def _whitebox_notes(r: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """What a white-box inversion finding says: its budget, the comparison with the decoder on the
    same vectors (resolved only when the interval excludes 0), the second evaluator."""
    rows: list[dict[str, Any]] = report.get("inversion_comparison", [])
    row: dict[str, Any] = next((c for c in rows if c["kind"] == r["kind"]), {})
    w, c = row.get("whitebox") or {}, row.get("comparison") or {}
    notes = [
        f"white-box optimisation inversion of the decoder's vectors against the observed model "
        f"({w.get('iterations')} Adam steps x {w.get('restarts')} restart(s) from the {str(w.get('init', '')).replace('_', ' ')}, "
        f"TV {w.get('tv_weight')}): a lower bound on what white-box access allows"
    ]
    if c:
        lo, hi = c.get("signed_interval") or (None, None)
        verdict = f"{c['stronger']} stronger" if c.get("resolved") else "not resolved (the interval covers 0)"
        notes.append(
            f"vs the decoder on the same {c.get('num_units')} {c.get('unit')}(s): identity similarity white-box − decoder "
            f"{_signed(c.get('signed_difference'))} [{_signed(lo)}, {_signed(hi)}], {verdict}"
        )
    if report.get("second_evaluator"):
        notes.append(f"second evaluator: {report['second_evaluator']}")
    return notes


def _signed(x: Any) -> str:
    """A signed number with three decimals ("n/a" when it is not a number)."""
    return "n/a" if not isinstance(x, (int, float)) else f"{x:+.3f}"


def _probe_findings(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A simulated probe as findings: the attacker's row (labels as it can get them) and, with
    recovered labels, the same attack given the true labels, flagged ``upper_bound`` (never the
    family's strongest result: `reports.tables.strongest_per_family`)."""
    where = f"{r.get('attack', '')} on {r.get('client', '')} ({r.get('model_state', '')} model)"
    metrics = _numbers({k: v for k, v in r.items() if k != "labels_granted"})
    out = [
        {
            "attack": "gradient",
            "observer": "server",
            "target_kind": "backbone",
            "metrics": metrics,
            "success_metric": "rank1" if "rank1" in metrics else None,
            "notes": f"{where}, labels {r.get('label_source', 'known')}: {r.get('threat_model', '')}",
        }
    ]
    granted = r.get("labels_granted")
    if isinstance(granted, dict):
        g = {**_numbers(granted), "upper_bound": 1.0}
        out.append(
            {
                "attack": "gradient",
                "observer": "server",
                "target_kind": "backbone",
                "metrics": g,
                "success_metric": "rank1" if "rank1" in g else None,
                "notes": f"{where}, the same probe given the true labels — an upper bound, not a result of this "
                f"attacker: {r.get('labels_granted_threat_model', '')}",
            }
        )
    return out


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

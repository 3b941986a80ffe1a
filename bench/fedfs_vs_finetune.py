"""FedFS against a plain FedAvg + local fine-tuning baseline, on the FedFS personalised protocol
(per-client AUROC of the own identity vs. all others, TPIR@FPIR = 1e-3), on our synthetic data.

    .venv/bin/python bench/fedfs_vs_finetune.py                              # demo scale, CPU
    .venv/bin/python bench/fedfs_vs_finetune.py --device cuda --participation 0.1 0.5 0.9
    .venv/bin/python bench/fedfs_vs_finetune.py --quick                      # smoke run

Setting (demo scale): φ0 of the ``demo`` preset (300 public identities, 32 px, tiny CNN, d = 128);
120 clients with ONE identity each (positive-only data), 20 images per identity split 10 train /
10 test; each client's model is scored on all 1,200 test images (1,190 non-mated probes, enough for
FPIR = 1e-3). 10 rounds, 2 local epochs (FedFS), batch 10 (a client's whole training set: K = 2
for the soft labels), SGD lr 0.01 (momentum 0.9, weight decay 5e-4), participation 0.5 unless
``--participation`` lists others (FedFS: 0.1 / 0.5 / 0.9).

Models compared (the same φ0, data, rounds, participation, local epochs and optimiser):

* **φ0**: the pre-trained model, no federated training.
* **FedAvg + fine-tune** (the baseline): FedAvg of the backbone where each client trains with the
  plainest positive-only objective, ``1 − cos(f_i, c)`` with ``c`` the client's own class
  embedding (the normalised mean φ0 feature of its training images; fixed, never sent: with a
  trainable ``c`` and positives only every embedding can collapse onto one point). Its
  personalised model is the final global model fine-tuned locally on the same loss for the same
  number of local epochs (the "Fine-tune" local adaptation of Yu et al. 2020, as in FedFR's
  Table 2). Its global model is reported too.
* **FedFS**: ``fedfs`` with its defaults; the personalised model (``"personal"``) and the
  aggregated feature of the global and personalised models (``"aggregated"``); its global model.

Results go to ``OUT/fedfs_vs_finetune.json`` and are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from federated_core.engine import ClientData, FederatedConfig, run_federated  # noqa: E402
from federated_core.engine.config import LocalTrainingConfig  # noqa: E402
from federated_core.engine.local_sgd import train_local  # noqa: E402
from federated_core.engine.messages import Message  # noqa: E402
from federated_core.engine.simulation import generator  # noqa: E402
from federated_core.engine.state import ClientState, ServerState  # noqa: E402
from federated_core.methods import BackboneMethod, FedAvg, get_method  # noqa: E402
from federated_core.methods._centers import init_centers  # noqa: E402
from federated_core.personalised import PersonalisedSplit, evaluate_personalised, split_clients  # noqa: E402
from federated_core.pretrain import PretrainConfig, SyntheticSpec, pretrain  # noqa: E402

CLIENT_POOL_START = 5_000_000  # far from φ0's public ids and other benches' pools
FPIRS = (1e-1, 1e-2, 1e-3)


class CenterPull(nn.Module):
    """``forward(x, y) -> [B]``: ``1 − cos(backbone(x), centers[y])`` (centers fixed)."""

    def __init__(self, backbone: nn.Module, centers: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("centers", centers.detach().clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(self.backbone(x), self.centers[y], dim=1)


class FedAvgPositiveOnly(BackboneMethod):
    """The baseline's federated part: FedAvg of the backbone; each client minimises `CenterPull`
    towards its own fixed class embedding (mean φ0 feature); only the backbone leaves."""

    phases = ("train",)

    def client_init(self, client_id: int, data: ClientData, global_model: Any, config: FederatedConfig,
                    rng: torch.Generator) -> ClientState:
        state = self.base_client_state(client_id, data, config)
        state.tensors["centers"] = init_centers("mean-feature", data, global_model, rng, config.device)
        return state

    def configure(self, phase: str, server_state: ServerState, round: int, participants: list[str]) -> list[Message]:
        return [self.backbone_broadcast(server_state, round, phase, participants)]

    def client_update(self, phase: str, client_state: ClientState, broadcast: list[Message], data: ClientData,
                      rng: torch.Generator) -> tuple[ClientState, list[Message]]:
        training = LocalTrainingConfig.from_dict(client_state.meta["training"])
        backbone = self.workspace.load(self.find(broadcast, "backbone"), training.device)
        result = train_local(CenterPull(backbone, client_state.tensors["centers"].to(training.device)), data, training, rng)
        meta = {**client_state.meta, "last_update": {"round": int(client_state.meta["round"]), "loss": result.mean_loss}}
        return ClientState(dict(client_state.tensors), meta), [
            self.backbone_upload(client_state, backbone, phase, result.event, len(data))]

    def server_step(self, phase: str, server_state: ServerState, uploads: list[Message]) -> tuple[ServerState, list[Message]]:
        avg = FedAvg()
        for m in uploads:
            avg.accumulate(m.tensors, weight=m.meta["num_samples"])
        return self.with_backbone(server_state, avg.finalize()), []


def fine_tune(global_model: nn.Module, state: ClientState, data: ClientData, seed: int, client: int) -> nn.Module:
    """The final global model fine-tuned on one client's data with `CenterPull` (Yu et al. 2020)."""
    import copy

    training = LocalTrainingConfig.from_dict(state.meta["training"])
    model = copy.deepcopy(global_model).to(training.device)
    train_local(CenterPull(model, state.tensors["centers"].to(training.device)), data, training,
                generator(seed, "client", 10_000, 0, client))
    return model.cpu().eval()


def build(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], PersonalisedSplit]:
    from federated_core.data import SyntheticFaces
    from privaudit.presets import pretrain_config

    if args.quick:
        config = PretrainConfig(
            data=SyntheticSpec(seed=args.seed, resolution=32), train_identities=(0, 24), train_images_per_identity=8,
            eval_identities=(900_000, 900_020), eval_images_per_identity=6, eval_genuine_pairs=200,
            eval_impostor_pairs=200, embedding_dim=64, epochs=3, batch_size=64, seed=args.seed,
        )
    else:
        config = pretrain_config("demo", seed=args.seed)
    phi0 = pretrain(config, cache_dir=args.cache, device=args.device, progress=args.progress)
    s = config.data
    gen = SyntheticFaces(seed=s.seed, resolution=s.resolution, groups=s.groups,
                         **({} if s.difficulty is None else {"difficulty": s.difficulty}))
    ids = torch.arange(CLIENT_POOL_START, CLIENT_POOL_START + args.clients)
    faces = gen.make_set(ids, args.train_images + args.test_images)
    per_client = [faces.of_identities([int(i)]) for i in ids]
    split = split_clients(per_client, train_count=args.train_images, seed=args.seed)
    return phi0.backbone.cpu().eval(), phi0.metrics, split


def fedfs_metrics(model_for_client: Any, split: PersonalisedSplit, args: argparse.Namespace) -> dict[str, Any]:
    report = evaluate_personalised(model_for_client, split, "fedfs", fpirs=FPIRS, seed=args.seed, device=args.device)
    return {k: v for k, v in report.mean.items()}


def config_for(args: argparse.Namespace, method: str, participation: float) -> FederatedConfig:
    return FederatedConfig(
        method=method, rounds=args.rounds, participation=participation, local_epochs=args.local_epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, progress=args.progress,
        eval_initial=False, eval_every=0, keep_wire_tensors=False,
    )


def run(args: argparse.Namespace, save: Any = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    phi0, phi0_metrics, split = build(args)
    print(f"φ0 and data ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    out: dict[str, Any] = {"phi0_pretrain_metrics": phi0_metrics, "φ0": fedfs_metrics(lambda c: phi0, split, args),
                           "by_participation": {}}
    for participation in args.participation:
        rows: dict[str, Any] = {}
        t = time.perf_counter()
        baseline = FedAvgPositiveOnly()
        baseline.name = "fedavg-finetune"
        res = run_federated(config_for(args, "fedavg-finetune", participation), split.clients, initial_model=phi0,
                            method=baseline)
        tuned = {c: fine_tune(res.backbone, res.client_states[c], split.clients[c], args.seed, c) for c in res.client_states}
        rows["FedAvg global"] = fedfs_metrics(lambda c: res.backbone, split, args)
        rows["FedAvg + fine-tune"] = fedfs_metrics(lambda c: tuned[c], split, args)
        rows["FedAvg + fine-tune"]["seconds"] = {"mean": time.perf_counter() - t}
        t = time.perf_counter()
        method = get_method("fedfs")
        fs = run_federated(config_for(args, "fedfs", participation), split.clients, initial_model=phi0, method=method)
        personal = {c: method.personalised_model(fs.client_states[c], "personal") for c in fs.client_states}
        aggregated = {c: method.personalised_model(fs.client_states[c], "aggregated", fs.backbone) for c in fs.client_states}
        rows["FedFS global"] = fedfs_metrics(lambda c: fs.backbone, split, args)
        rows["FedFS personal"] = fedfs_metrics(lambda c: personal[c], split, args)
        rows["FedFS aggregated"] = fedfs_metrics(lambda c: aggregated[c], split, args)
        rows["FedFS personal"]["seconds"] = {"mean": time.perf_counter() - t}
        out["by_participation"][str(participation)] = rows
        print(f"  participation {participation} done", flush=True)
        if save is not None:  # after every participation rate, so an interrupted run keeps what it measured
            save(out)
    out["seconds"] = time.perf_counter() - t0
    return out


def _fmt(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    return "—" if v is None else f"{100 * v['mean']:.1f}"


def print_table(results: dict[str, Any]) -> None:
    keys = ["auroc", "identification.tpir_at_fpir.0.1", "identification.tpir_at_fpir.0.01", "identification.tpir_at_fpir.0.001"]
    print("\n| participation | model | AUROC | TPIR@1e-1 | TPIR@1e-2 | TPIR@1e-3 |\n|---|---|---|---|---|---|")
    print("| — | φ0 (pre-trained) | " + " | ".join(_fmt(results["φ0"], k) for k in keys) + " |")
    for p, rows in results["by_participation"].items():
        for name, row in rows.items():
            print(f"| {p} | {name} | " + " | ".join(_fmt(row, k) for k in keys) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/fedfs"))
    p.add_argument("--cache", type=Path, default=Path(".cache/privaudit"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--clients", type=int, default=120)
    p.add_argument("--train-images", type=int, default=10)
    p.add_argument("--test-images", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--participation", type=float, nargs="+", default=[0.5])
    args = p.parse_args()
    if args.quick:
        args.clients, args.train_images, args.test_images, args.rounds = 12, 8, 4, 2
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    def save(results: dict[str, Any]) -> None:
        (args.out / "fedfs_vs_finetune.json").write_text(json.dumps({**results, "settings": settings}, indent=1, default=float))

    results = run(args, save)
    save(results)
    print_table(results)
    print(f"\nwritten {args.out / 'fedfs_vs_finetune.json'} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()

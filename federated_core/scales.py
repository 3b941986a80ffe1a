"""Scale presets of federated runs on synthetic faces: ``tiny`` (tests, seconds), ``demo`` (a few
minutes for one method on 2 CPU cores), ``paper`` (GPU, 112 px MobileFaceNet).

A `FederatedScale` says how many clients hold how many identities with how many images, how many
unseen test identities evaluate the global model, and the default local-training settings.
`build_federated_data` renders the data with the same synthetic generator as φ0's pre-training
(`federated_core.pretrain.SyntheticSpec`), keeping the three identity sets disjoint:

* public (φ0's pre-training): ids ``0 .. n_public`` and its own evaluation ids (900,000+ or
  9,000,000+), chosen by the pre-training config;
* clients and test: drawn without overlap (`split_identities`) from the pool
  ``identity_pool_start + [0, clients·ids_per_client + test)``, far from both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from federated_core.data.faceset import FaceSet
from federated_core.engine.config import EvaluationConfig, FederatedConfig
from federated_core.engine.messages import client_party
from federated_core.engine.state import ClientData

PARTITIONS = ("balanced", "lognormal", "one-identity")
SCALE_NAMES = ("tiny", "demo", "paper")


@dataclass(frozen=True)
class FederatedScale:
    """Data and local-training sizes of a federated run (see the module docstring)."""

    name: str
    num_clients: int
    identities_per_client: int
    images_per_identity: int
    test_identities: int
    test_images_per_identity: int
    rounds: int
    local_epochs: int
    batch_size: int
    lr: float
    partition: str = "balanced"
    lognormal_sigma: float = 1.0
    genuine_pairs: int = 1000
    impostor_pairs: int = 1000
    identity_pool_start: int = 1_000_000

    def __post_init__(self) -> None:
        for name in (
            "num_clients",
            "identities_per_client",
            "images_per_identity",
            "test_identities",
            "rounds",
            "local_epochs",
            "batch_size",
            "genuine_pairs",
            "impostor_pairs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.test_identities < 2:
            raise ValueError(f"test_identities must be >= 2, got {self.test_identities}")
        if self.test_images_per_identity < 2:
            raise ValueError(
                f"test_images_per_identity must be >= 2 (genuine pairs), got {self.test_images_per_identity}"
            )
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        if self.partition == "one-identity" and self.identities_per_client != 1:
            raise ValueError(
                f"partition 'one-identity' needs identities_per_client=1, got {self.identities_per_client}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @property
    def client_identities(self) -> int:
        return self.num_clients * self.identities_per_client

    def replace(self, **changes: Any) -> "FederatedScale":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SCALES: dict[str, FederatedScale] = {
    "tiny": FederatedScale(
        name="tiny",
        num_clients=4,
        identities_per_client=3,
        images_per_identity=4,
        test_identities=8,
        test_images_per_identity=4,
        rounds=2,
        local_epochs=1,
        batch_size=16,
        lr=0.05,
        genuine_pairs=100,
        impostor_pairs=100,
    ),
    "demo": FederatedScale(
        name="demo",
        num_clients=10,
        identities_per_client=20,
        images_per_identity=10,
        test_identities=100,
        test_images_per_identity=6,
        rounds=8,
        local_epochs=1,
        batch_size=32,
        lr=0.05,
        genuine_pairs=1500,
        impostor_pairs=1500,
    ),
    "paper": FederatedScale(
        name="paper",
        num_clients=40,
        identities_per_client=100,
        images_per_identity=20,
        test_identities=1000,
        test_images_per_identity=10,
        rounds=20,
        local_epochs=1,
        batch_size=128,
        lr=0.01,
        genuine_pairs=30_000,
        impostor_pairs=300_000,
    ),
}


def federated_scale(name: str, **overrides: Any) -> FederatedScale:
    """The preset ``name`` with ``overrides`` (None values are ignored)."""
    if name not in SCALES:
        raise ValueError(f"scale must be one of {SCALE_NAMES}, got {name!r}")
    return SCALES[name].replace(**overrides)


@dataclass
class FederatedData:
    """Clients' training data, the unseen test identities, and how to regenerate them."""

    clients: list[ClientData]
    test: FaceSet
    data_spec: dict[str, Any]


def _partition(scale: FederatedScale, identities: torch.Tensor, seed: int) -> list[torch.Tensor]:
    from federated_core.data.split import partition_balanced, partition_lognormal, partition_one_identity

    if scale.partition == "balanced":
        return partition_balanced(identities, scale.num_clients, seed)
    if scale.partition == "lognormal":
        return partition_lognormal(identities, scale.num_clients, seed, sigma=scale.lognormal_sigma)
    return partition_one_identity(identities)


def build_federated_data(scale: FederatedScale, synthetic: Any, seed: int = 0) -> FederatedData:
    """Render the clients' and the test identities' images with the generator of ``synthetic``
    (a `federated_core.pretrain.SyntheticSpec`, the same as φ0's, so the domains match)."""
    from federated_core.data.split import split_identities

    generator = synthetic.generator()
    pool = torch.arange(
        scale.identity_pool_start,
        scale.identity_pool_start + scale.client_identities + scale.test_identities,
        dtype=torch.int64,
    )
    split = split_identities(pool, {"clients": scale.client_identities, "test": scale.test_identities}, seed)
    parts = _partition(scale, split["clients"], seed)
    clients = []
    spec_clients = {}
    for cid, ids in enumerate(parts):
        faces = generator.make_set(ids, scale.images_per_identity)
        clients.append(ClientData.from_faces(faces))
        spec_clients[client_party(cid)] = {
            "identities": [int(i) for i in ids],
            "images_per_identity": scale.images_per_identity,
            "start_index": 0,
        }
    test = generator.make_set(split["test"], scale.test_images_per_identity)
    data_spec = {
        "source": "synthetic",
        "generator": (
            dataclasses.asdict(synthetic)
            if dataclasses.is_dataclass(synthetic) and not isinstance(synthetic, type)
            else dict(synthetic)
        ),
        "render": "federated_core.data.SyntheticFaces(**generator).make_set(identities, images_per_identity, start_index)",
        "clients": spec_clients,
        "test": {
            "identities": [int(i) for i in split["test"]],
            "images_per_identity": scale.test_images_per_identity,
            "start_index": 0,
        },
        "scale": dataclasses.asdict(scale),
        "seed": seed,
    }
    return FederatedData(clients, test, data_spec)


def federated_config(scale: FederatedScale, method: str, seed: int = 0, **overrides: Any) -> FederatedConfig:
    """A `FederatedConfig` with the scale's rounds and local-training settings, then ``overrides``."""
    values: dict[str, Any] = dict(
        method=method,
        rounds=scale.rounds,
        local_epochs=scale.local_epochs,
        batch_size=scale.batch_size,
        lr=scale.lr,
        seed=seed,
        evaluation=EvaluationConfig(genuine_pairs=scale.genuine_pairs, impostor_pairs=scale.impostor_pairs, seed=seed),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FederatedConfig(**values)

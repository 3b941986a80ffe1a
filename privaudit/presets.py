"""Scale presets (`tiny` for tests, `demo` for the default job on 2 CPU cores, `paper` for a GPU)."""

from __future__ import annotations

from federated_core.pretrain import PretrainConfig, SyntheticSpec

SCALES = ("tiny", "demo", "paper")


def pretrain_config(scale: str, seed: int = 0, identities: int | None = None,
                    difficulty: float | None = None) -> PretrainConfig:
    """The φ0 pre-training config of a scale preset."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if identities is not None and identities < 2:
        raise ValueError(f"identities must be >= 2, got {identities}")
    if scale == "tiny":
        n = identities or 24
        return PretrainConfig(
            data=SyntheticSpec(seed=seed, resolution=32, difficulty=difficulty),
            train_identities=(0, n), train_images_per_identity=8,
            eval_identities=(900_000, 900_020), eval_images_per_identity=4,
            eval_genuine_pairs=100, eval_impostor_pairs=200,
            backbone="tiny", embedding_dim=64, epochs=3, batch_size=64, seed=seed,
        )
    if scale == "demo":
        n = identities or 300
        return PretrainConfig(
            data=SyntheticSpec(seed=seed, resolution=32, difficulty=difficulty),
            train_identities=(0, n), train_images_per_identity=16,
            eval_identities=(900_000, 900_200), eval_images_per_identity=8,
            eval_genuine_pairs=3000, eval_impostor_pairs=3000,
            backbone="tiny", embedding_dim=128, epochs=10, batch_size=128, seed=seed,
        )
    n = identities or 10_000
    return PretrainConfig(
        data=SyntheticSpec(seed=seed, resolution=112, difficulty=difficulty),
        train_identities=(0, n), train_images_per_identity=30,
        eval_identities=(9_000_000, 9_002_000), eval_images_per_identity=10,
        eval_genuine_pairs=30_000, eval_impostor_pairs=300_000,
        backbone="mobilefacenet", embedding_dim=512, epochs=20, batch_size=256, seed=seed,
    )

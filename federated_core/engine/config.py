"""Configuration of a federated run (`FederatedConfig`) and of one client's local training.

`FederatedConfig` holds what the engine needs (rounds, participation fraction C of FedGC Table 1,
offline probability of PrivacyFace App. A.2.7, local SGD settings, DP-SGD, evaluation, the method
and its hyper-parameters, the initial backbone). `LocalTrainingConfig` is the JSON-able part a
client needs to train locally; methods keep it in ``ClientState.meta["training"]`` so that
``client_update`` depends on nothing but its arguments.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OFFLINE_POLICIES = ("one-client", "independent")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_float(
    name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DpSgdConfig:
    """DP-SGD on every client (Abadi et al. 2016): per-sample clipping to ``max_grad_norm`` and
    Gaussian noise of std ``noise_multiplier * max_grad_norm`` on each summed batch gradient, with
    Poisson sampling of batches (rate ``batch_size / n_k``).

    Give ``noise_multiplier``, or ``target_epsilon`` and ``delta``: the engine then calibrates each
    client's noise multiplier so that its DP-SGD steps over all rounds (counted as if it took part
    in every round) compose to ``target_epsilon`` at ``delta`` (RDP accountant).
    """

    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        _check_float("dp_sgd.max_grad_norm", self.max_grad_norm, 0.0, math.inf, low_open=True, high_open=True)
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("dp_sgd needs noise_multiplier (> 0) or target_epsilon (> 0) with delta, got neither")
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError(
                f"dp_sgd takes noise_multiplier or target_epsilon, not both (got {self.noise_multiplier} and "
                f"{self.target_epsilon})"
            )
        if self.noise_multiplier is not None:
            _check_float("dp_sgd.noise_multiplier", self.noise_multiplier, 0.0, math.inf, low_open=True, high_open=True)
        if self.target_epsilon is not None:
            _check_float("dp_sgd.target_epsilon", self.target_epsilon, 0.0, math.inf, low_open=True, high_open=True)
            if self.delta is None:
                raise ValueError("dp_sgd.delta must be given with target_epsilon (0 < delta < 1), got None")
        if self.delta is not None:
            _check_float("dp_sgd.delta", self.delta, 0.0, 1.0, low_open=True, high_open=True)


@dataclass(frozen=True)
class EvaluationConfig:
    """Generic evaluation of the global model on unseen identities (DESIGN §5): 1:1 verification
    on sampled pairs and 1:N open-set identification with half of the identities enrolled."""

    genuine_pairs: int = 1000
    impostor_pairs: int = 1000
    fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    fpirs: tuple[float, ...] = (1e-1, 1e-2)
    enrolled_fraction: float = 0.5
    seed: int = 0
    # replicates of the identity cluster bootstrap behind the verification intervals (0: none)
    bootstrap: int = 200

    def __post_init__(self) -> None:
        _check_int("evaluation.genuine_pairs", self.genuine_pairs, 1)
        _check_int("evaluation.bootstrap", self.bootstrap, 0)
        _check_int("evaluation.impostor_pairs", self.impostor_pairs, 1)
        for far in self.fars:
            _check_float("evaluation.fars[i]", far, 0.0, 1.0, low_open=True, high_open=True)
        for fpir in self.fpirs:
            _check_float("evaluation.fpirs[i]", fpir, 0.0, 1.0, low_open=True, high_open=True)
        _check_float("evaluation.enrolled_fraction", self.enrolled_fraction, 0.0, 1.0, low_open=True, high_open=True)
        object.__setattr__(self, "fars", tuple(float(f) for f in self.fars))
        object.__setattr__(self, "fpirs", tuple(float(f) for f in self.fpirs))


@dataclass(frozen=True)
class FederatedConfig:
    """Everything the engine needs to run one method.

    Attributes:
        method, method_params: a registered method name and its hyper-parameters.
        rounds: communication rounds.
        participation: fraction C of clients sampled each round (FedGC Table 1), in (0, 1];
            ``max(1, round(C*K))`` clients are drawn uniformly without replacement.
        offline_probability: PrivacyFace App. A.2.7. With policy ``"one-client"`` (the paper's):
            with this probability one uniformly drawn sampled client is offline in a round. With
            ``"independent"``: each sampled client is offline independently with this probability.
        local_epochs, batch_size, lr, momentum, weight_decay: local SGD (FedGC: lr 0.1,
            momentum 0.9, weight decay 5e-4).
        seed: every random choice of the run derives from it.
        device: torch device of local training, server steps and evaluation.
        eval_every: evaluate the global model after every ``eval_every`` rounds (and always after
            the last); 0 = only after the last. ``eval_initial`` adds round 0 (the initial model).
        dp_sgd: None, or DP-SGD on every client.
        initial_backbone: a safetensors checkpoint written by
            `federated_core.models.state_dict_to_safetensors` (e.g. φ0), or None = from scratch
            with ``backbone``/``embedding_dim``/``resolution`` (FedGC's setting).
        keep_wire_tensors: keep message payloads in the wire log (False: shapes only; benchmarks).
        flip_augmentation: random horizontal flips in local training.
        tolerate_client_failures: False (default): a client whose ``client_update`` raises stops
            the run with a `ClientFailureError`. True: it is dropped from the rest of that round
            and recorded in ``metrics["rounds"][i]["failed"]`` and ``metrics["client_failures"]``.
        max_update_norm: None (default), or an l2 bound on a client's ``backbone`` update (its
            upload minus the broadcast global backbone, over all floating-point entries); a larger
            update is rejected by the server before aggregation (see `engine.validation`).
    """

    method: str = "fedpe"
    method_params: dict[str, Any] = field(default_factory=dict)
    rounds: int = 2
    participation: float = 1.0
    offline_probability: float = 0.0
    offline_policy: str = "one-client"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    eval_initial: bool = True
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    dp_sgd: DpSgdConfig | None = None
    progress: bool = True
    initial_backbone: str | None = None
    backbone: str = "tiny"
    embedding_dim: int = 64
    resolution: int = 32
    keep_wire_tensors: bool = True
    flip_augmentation: bool = True
    tolerate_client_failures: bool = False
    max_update_norm: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a method name, got {self.method!r}")
        if not isinstance(self.method_params, dict):
            raise ValueError(f"method_params must be a dict, got {type(self.method_params).__name__}")
        _check_int("rounds", self.rounds, 1)
        _check_float("participation", self.participation, 0.0, 1.0, low_open=True)
        _check_float("offline_probability", self.offline_probability, 0.0, 1.0)
        if self.offline_policy not in OFFLINE_POLICIES:
            raise ValueError(
                f"offline_policy must be one of {', '.join(OFFLINE_POLICIES)}, got {self.offline_policy!r}"
            )
        _check_int("local_epochs", self.local_epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        _check_int("seed", self.seed, 0)
        _check_int("eval_every", self.eval_every, 0)
        _check_int("embedding_dim", self.embedding_dim, 1)
        _check_int("resolution", self.resolution, 1)
        if not isinstance(self.tolerate_client_failures, bool):
            raise ValueError(f"tolerate_client_failures must be True or False, got {self.tolerate_client_failures!r}")
        if self.max_update_norm is not None:
            object.__setattr__(
                self,
                "max_update_norm",
                _check_float("max_update_norm", self.max_update_norm, 0.0, math.inf, low_open=True, high_open=True),
            )
        if isinstance(self.dp_sgd, dict):
            object.__setattr__(self, "dp_sgd", DpSgdConfig(**self.dp_sgd))
        if isinstance(self.evaluation, dict):
            object.__setattr__(self, "evaluation", EvaluationConfig(**self.evaluation))
        if self.dp_sgd is not None and not isinstance(self.dp_sgd, DpSgdConfig):
            raise ValueError(f"dp_sgd must be None or a DpSgdConfig, got {self.dp_sgd!r}")
        import torch

        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(
                f"device must be a torch device name (cpu, cuda, cuda:1), got {self.device!r}: {exc}"
            ) from None

    def eval_rounds(self) -> list[int]:
        """Rounds after which the global model is evaluated (0 = the initial model)."""
        rounds = [0] if self.eval_initial else []
        if self.eval_every:
            rounds += list(range(self.eval_every, self.rounds + 1, self.eval_every))
        if self.rounds not in rounds:
            rounds.append(self.rounds)
        return rounds

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["evaluation"]["fars"] = list(self.evaluation.fars)
        d["evaluation"]["fpirs"] = list(self.evaluation.fpirs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FederatedConfig":
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown FederatedConfig key(s) {unknown}; allowed: {sorted(names)}")
        if d.get("dp_sgd") is not None:
            d["dp_sgd"] = DpSgdConfig(**d["dp_sgd"])
        if "evaluation" in d:
            ev = dict(d["evaluation"])
            ev["fars"] = tuple(ev.get("fars", EvaluationConfig.fars))
            ev["fpirs"] = tuple(ev.get("fpirs", EvaluationConfig.fpirs))
            d["evaluation"] = EvaluationConfig(**ev)
        return cls(**d)

    def artifact_dict(self) -> dict[str, Any]:
        """`to_dict` as written into a run's artifacts (metrics, checkpoints): the initial backbone
        by the SHA-256 of its file, not its absolute path, so a moved folder or another output
        folder gives the same bytes."""
        from federated_core.integrity import file_sha256

        d = self.to_dict()
        if d.get("initial_backbone") is not None:
            d["initial_backbone"] = {"sha256": file_sha256(d["initial_backbone"])}
        return d

    def fingerprint_dict(self) -> dict[str, Any]:
        """The fields that determine the numbers of a run (progress bars excluded): resume checks
        that a checkpoint was written with the same ones."""
        d = self.artifact_dict()
        d.pop("progress")
        return d


@dataclass(frozen=True)
class LocalTrainingConfig:
    """What a client needs to train locally; JSON-able (kept in ``ClientState.meta``).

    ``noise_multiplier``/``max_grad_norm`` are set when DP-SGD is on (already calibrated for this
    client when a target epsilon was given).
    """

    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    device: str = "cpu"
    flip: bool = True
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None

    @property
    def dp(self) -> bool:
        return self.noise_multiplier is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LocalTrainingConfig":
        return cls(**d)


def local_training_config(config: FederatedConfig, num_examples: int) -> LocalTrainingConfig:
    """The local-training settings of a client with ``num_examples`` images, DP-SGD noise
    calibrated when ``config.dp_sgd`` asks for a target epsilon."""
    noise = None
    clip = None
    if config.dp_sgd is not None:
        clip = config.dp_sgd.max_grad_norm
        noise = config.dp_sgd.noise_multiplier
        if noise is None:
            from federated_core.engine.dp_sgd import calibrate_noise_multiplier, dp_sgd_schedule

            target_epsilon, delta = config.dp_sgd.target_epsilon, config.dp_sgd.delta
            if target_epsilon is None or delta is None:
                raise ValueError(
                    f"dp_sgd without noise_multiplier needs target_epsilon and delta, got {target_epsilon!r} and {delta!r}"
                )
            q, steps_per_round = dp_sgd_schedule(num_examples, config.batch_size, config.local_epochs)
            noise = calibrate_noise_multiplier(
                target_epsilon=float(target_epsilon),
                delta=float(delta),
                sampling_probability=q,
                steps=steps_per_round * config.rounds,
            )
    return LocalTrainingConfig(
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        device=config.device,
        flip=config.flip_augmentation,
        noise_multiplier=noise,
        max_grad_norm=clip,
    )

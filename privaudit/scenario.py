"""`Scenario`: everything one audit needs, as a validated dataclass loadable from TOML or YAML.

A scenario names the data (synthetic generator parameters), the federation (clients, identities,
images, rounds, partition), the methods to train with their hyper-parameters (and optionally
DP-SGD on every client, `DpSgdSpec`), the privacy
parameters (PrivacyFace's epsilon, delta, rho, Q, T and the calibration), the attacks, the scale
preset, the device, the seed and the output directory. Unknown keys are named and bad values
are refused with the allowed range (`privaudit.config_io`).

``Scenario.demo()`` is the embedded default (the README's first command runs it);
``Scenario.tiny()`` is the same pipeline at test size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from privaudit.config_io import from_dict, load_document, to_dict

if TYPE_CHECKING:  # the engine imports torch: only when a DP-SGD setting is checked or used
    from federated_core.engine.config import DpSgdConfig

METHOD_NAMES = (
    "fedpe",
    "fedpe-fixed",
    "shared-centers",
    "fedface",
    "fedgc",
    "fedgc-cos",
    "fedfr",
    "fedfs",
    "fedavg-finetune",
    "privacyface",
    "privacyface-nonoise",
    "noisy-centers",
    "privacyface-e2e",
)
ACCOUNTANT_NAMES = ("basic", "advanced", "rdp", "prv")
ATTACK_NAMES = ("knn", "inversion", "gradient", "membership")
SCALES = ("tiny", "demo", "bench", "paper")


def _positive_int(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


@dataclass
class SplitSpec:
    """A folder's identities split into disjoint parts (`federated_core.data.folder_source.split_folder_identities`),
    each a count (int >= 0) or a fraction in (0, 1) of the usable identities. Unset: ``public`` =
    ``pretrain.identities``, ``clients`` = what ``[federation]`` asks for (clients x identities per client),
    ``test`` = ``federation.test_identities``, ``distractors`` = the identities left, at most
    ``attacks.gallery_distractors`` (the split record in the results says which rule gave each count)."""

    public: int | float | None = None
    clients: int | float | None = None
    test: int | float | None = None
    distractors: int | float | None = None

    def __post_init__(self) -> None:
        for name in ("public", "clients", "test", "distractors"):
            v = getattr(self, name)
            ok = v is None or (isinstance(v, int) and v >= 0) or (isinstance(v, float) and 0 < v < 1)
            if isinstance(v, bool) or not ok:
                raise ValueError(f"data.split.{name} must be an integer >= 0 or a fraction in (0, 1), got {v!r}")


@dataclass
class DataSpec:
    """The faces: ``source = "synthetic"`` (the embedded default: generator parameters ``seed``,
    ``groups``, ``difficulty``) or ``"folder"``: an identity-per-folder tree of face crops at ``path``
    (any format Pillow reads, any size, resized to ``resolution`` on load; ``align = true`` detects and
    aligns raw photos with MTCNN first, cached), identities with fewer than ``min_images_per_identity``
    readable images left out (listed in the results), at most ``max_identities`` kept (a seeded subset),
    split by ``[data.split]``. ``pairs`` (an LFW-style pairs file, image paths relative to ``path``) and
    ``bin`` (an insightface verification ``.bin``) add verification protocols to the utility table."""

    source: Literal["synthetic", "folder"] = "synthetic"
    seed: int = 0
    resolution: int = 32
    groups: int = 4
    difficulty: float | None = None
    path: str | None = None
    align: bool = False
    min_images_per_identity: int = 2
    max_identities: int | None = None
    skip_unreadable: bool = False
    split: SplitSpec = field(default_factory=SplitSpec)
    pairs: str | None = None
    bin: str | None = None

    def __post_init__(self) -> None:
        if self.resolution not in (32, 48, 64, 96, 112):
            raise ValueError(f"data.resolution must be one of 32, 48, 64, 96, 112, got {self.resolution}")
        _positive_int("data.groups", self.groups)
        if self.difficulty is not None and not 0 <= self.difficulty <= 1:
            raise ValueError(f"data.difficulty must be in [0, 1], got {self.difficulty}")
        if self.source not in ("synthetic", "folder"):
            raise ValueError(f"data.source must be 'synthetic' or 'folder', got {self.source!r}")
        _positive_int("data.min_images_per_identity", self.min_images_per_identity)
        if self.max_identities is not None:
            _positive_int("data.max_identities", self.max_identities, 2)
        folder_keys = {"path": self.path, "pairs": self.pairs, "bin": self.bin}
        if self.source == "synthetic":
            given = [k for k, v in folder_keys.items() if v is not None] + (["align"] if self.align else [])
            if given:
                raise ValueError(f"data.{given[0]} is only used with data.source = 'folder' (the source is synthetic)")
        elif not self.path:
            raise ValueError(
                "data.source = 'folder' needs data.path: a folder with one sub-folder of face images per identity"
            )


@dataclass
class PretrainSpec:
    """Central pre-training of φ0 on public identities (disjoint from clients and test)."""

    identities: int = 300
    images_per_identity: int = 16
    epochs: int = 10
    backbone: str = "tiny"
    embedding_dim: int = 128
    head: Literal["cosface", "arcface", "softmax"] = "cosface"

    def __post_init__(self) -> None:
        _positive_int("pretrain.identities", self.identities, 2)
        _positive_int("pretrain.images_per_identity", self.images_per_identity, 2)
        _positive_int("pretrain.epochs", self.epochs)
        _positive_int("pretrain.embedding_dim", self.embedding_dim, 2)


@dataclass
class ModelSpec:
    """Your own pre-trained backbone as φ0 instead of pre-training one (`federated_core.models.weights`):
    ``backbone`` names the architecture of ``weights`` (a ``.safetensors`` file or a PyTorch state dict,
    read with ``weights_only=True``); ``embedding_dim``, when given, must match the weights. The images
    are resized to ``data.resolution`` for it. Without ``weights`` φ0 is pre-trained as ``[pretrain]`` says."""

    backbone: str | None = None
    weights: str | None = None
    embedding_dim: int | None = None

    def __post_init__(self) -> None:
        from federated_core.models.weights import BACKBONE_NAMES

        if self.weights is not None and self.backbone is None:
            raise ValueError(
                f"model.weights ({self.weights!r}) needs model.backbone: one of {', '.join(BACKBONE_NAMES)}"
            )
        if self.backbone is not None and self.backbone not in BACKBONE_NAMES:
            raise ValueError(f"model.backbone must be one of {', '.join(BACKBONE_NAMES)}, got {self.backbone!r}")
        if self.backbone is not None and self.weights is None:
            raise ValueError(
                f"model.backbone ({self.backbone!r}) is only used with model.weights; to pre-train that "
                "architecture set pretrain.backbone"
            )
        if self.embedding_dim is not None:
            _positive_int("model.embedding_dim", self.embedding_dim, 2)


@dataclass
class FederationSpec:
    """Clients, their identities and images, the unseen test identities, and local training."""

    num_clients: int = 4
    identities_per_client: int = 20
    images_per_identity: int = 6
    partition: Literal["balanced", "lognormal", "one-identity"] = "balanced"
    test_identities: int = 100
    test_images_per_identity: int = 6
    rounds: int = 3
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01  # fine-tuning φ0: 0.05 drops every method below φ0 at demo scale
    participation: float = 1.0
    offline_probability: float = 0.0
    # a client whose update raises stops the audit (exit 1, naming client and round) unless true:
    # then it is dropped from that round and the method's row says how many failed in which rounds
    tolerate_client_failures: bool = False
    # optional l2 bound on a client's backbone update; a larger one is rejected before aggregation
    max_update_norm: float | None = None
    # pairs of the 1:1 protocol on the test identities (None: 1,500 genuine and 3,000 impostor, capped
    # at what the test set holds); TAR@FAR=f needs well over 1/f impostor pairs to mean anything
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None
    # where the federation runs (`privaudit.engines`): in this process, or on Flower (simulation engine,
    # or a SuperLink and SuperNodes on loopback); the same seed gives the same numbers on each
    engine: str = "inprocess"

    def __post_init__(self) -> None:
        from privaudit.engines import check_engine

        check_engine(self.engine)
        if not isinstance(self.tolerate_client_failures, bool):
            raise ValueError(
                f"federation.tolerate_client_failures must be true or false, got {self.tolerate_client_failures!r}"
            )
        if self.max_update_norm is not None and not (self.max_update_norm > 0 and math.isfinite(self.max_update_norm)):
            raise ValueError(f"federation.max_update_norm must be a finite number > 0, got {self.max_update_norm}")
        for name in (
            "num_clients",
            "identities_per_client",
            "images_per_identity",
            "rounds",
            "local_epochs",
            "batch_size",
        ):
            _positive_int(f"federation.{name}", getattr(self, name))
        for name in ("genuine_pairs", "impostor_pairs"):
            if getattr(self, name) is not None:
                _positive_int(f"federation.{name}", getattr(self, name))
        _positive_int("federation.test_identities", self.test_identities, 2)
        _positive_int("federation.test_images_per_identity", self.test_images_per_identity, 2)
        if not (self.lr > 0):
            raise ValueError(f"federation.lr must be > 0, got {self.lr}")
        if not 0 < self.participation <= 1:
            raise ValueError(f"federation.participation must be in (0, 1], got {self.participation}")
        if not 0 <= self.offline_probability < 1:
            raise ValueError(f"federation.offline_probability must be in [0, 1), got {self.offline_probability}")


@dataclass
class DpSgdSpec:
    """DP-SGD on every client of one method (Abadi et al. 2016, "Deep Learning with Differential
    Privacy"): each local step clips every per-example gradient to ``max_grad_norm``, adds
    Gaussian noise of std ``noise_multiplier * max_grad_norm`` to their sum, and samples its batch
    by Poisson sampling (`federated_core.engine.dp_sgd`). Every upload a client makes then carries
    the DP event of the DP-SGD steps behind it, and the ledger composes them.

    Give ``noise_multiplier``, or ``target_epsilon`` with ``delta``: the engine then calibrates each
    client's noise multiplier for that (ε, δ) over all rounds. ``delta`` serves only that
    calibration: the audit accounts every upload at the scenario's δ (``privacy.delta``, default
    1e-5). The values are checked by `federated_core.engine.config.DpSgdConfig`.
    """

    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    target_epsilon: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        self.to_config()  # DpSgdConfig's checks; messages name the key ("dp_sgd.noise_multiplier ...")

    def to_config(self) -> DpSgdConfig:
        """The engine's `DpSgdConfig` (imports the engine, hence torch, on first use)."""
        from federated_core.engine.config import DpSgdConfig

        return DpSgdConfig(
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            target_epsilon=self.target_epsilon,
            delta=self.delta,
        )

    def describe(self) -> str:
        """A short phrase for reports: ``DP-SGD (σ = 1, C = 1)`` or ``DP-SGD (target ε = 2 at δ = 1e-05, C = 1)``."""
        if self.noise_multiplier is not None:
            return f"DP-SGD (σ = {self.noise_multiplier:g}, C = {self.max_grad_norm:g})"
        return f"DP-SGD (target ε = {self.target_epsilon:g} at δ = {self.delta:g}, C = {self.max_grad_norm:g})"


DP_SGD_SUFFIX = "+dpsgd"


@dataclass
class MethodSpec:
    """One method (or variant) to train: a registered name, its hyper-parameters, optionally
    DP-SGD on every client (``dp_sgd``: a `DpSgdSpec`, or a mapping of its keys), and its
    ``fidelity`` preset (``"default"``, or ``"paper"`` / ``"official-code"`` where the method has
    one: `federated_core.methods.fidelity`; the preset then decides the privacy parameters of a
    PrivacyFace variant, not the scenario's ``[privacy]`` table)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    dp_sgd: DpSgdSpec | None = None
    fidelity: Literal["default", "paper", "official-code"] = "default"

    def __post_init__(self) -> None:
        if self.name not in METHOD_NAMES:
            raise ValueError(f"methods: unknown method {self.name!r}; choose from {', '.join(METHOD_NAMES)}")
        if self.fidelity != "default":
            from federated_core.methods import method_class
            from federated_core.methods.fidelity import check_fidelity

            check_fidelity(
                self.name, self.fidelity, tuple(getattr(method_class(self.name), "fidelities", ("default",)))
            )
        if isinstance(self.dp_sgd, dict):
            self.dp_sgd = from_dict(DpSgdSpec, self.dp_sgd, "dp_sgd")
        elif self.dp_sgd is not None and not isinstance(self.dp_sgd, DpSgdSpec):
            raise ValueError(
                f"dp_sgd must be a mapping of DP-SGD settings (a DpSgdSpec) or left out, "
                f"got {type(self.dp_sgd).__name__}"
            )

    @property
    def key(self) -> str:
        """The variant's name in results and its run folder: ``label`` if given, else the method
        name, with ``+dpsgd`` appended when DP-SGD is on (``fedpe`` vs ``fedpe+dpsgd``)."""
        if self.label:
            return self.label
        return self.name + (DP_SGD_SUFFIX if self.dp_sgd is not None else "")


@dataclass
class PrivacySpec:
    """Privacy parameters of the DP releases (PrivacyFace: ε = 1, ρ = 1.3, Q = 1).

    ``delta`` is 1e-5 unless set. A δ ≥ 1/n, n the fewest privacy units (images, identities,
    class centers) a client holds under a guarantee's unit, is refused before anything runs:
    releasing one such record in the clear satisfies it (PrivacyFace's own δ = 1/|D| is such a
    δ). ``allow_large_delta = true`` runs anyway and flags every affected guarantee.
    """

    epsilon: float = 1.0
    delta: float = 1e-5
    allow_large_delta: bool = False
    rho: float = 1.3
    queries: int = 1
    threshold_fraction: float = 0.25  # T as a fraction of a client's classes (T=512 of ~7k at paper scale)
    calibration: Literal["analytic", "classic"] = "analytic"
    accountants: list[str] = field(default_factory=lambda: list(ACCOUNTANT_NAMES))
    audit_trials: int = 10000

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"privacy.epsilon must be a finite number > 0, got {self.epsilon}")
        if self.delta is None or not 0 < self.delta < 1:
            raise ValueError(f"privacy.delta must be in (0, 1), got {self.delta}")
        if not 0 < self.rho <= math.pi:
            raise ValueError(f"privacy.rho must be in (0, pi], got {self.rho}")
        _positive_int("privacy.queries", self.queries)
        if not 0 < self.threshold_fraction <= 1:
            raise ValueError(f"privacy.threshold_fraction must be in (0, 1], got {self.threshold_fraction}")
        bad = [a for a in self.accountants if a not in ACCOUNTANT_NAMES]
        if bad or not self.accountants:
            raise ValueError(
                f"privacy.accountants must be a non-empty subset of {list(ACCOUNTANT_NAMES)}, got {self.accountants}"
            )
        _positive_int("privacy.audit_trials", self.audit_trials, 10)


@dataclass
class AttackSpec:
    """Which attacks run, from which observers, and their sizes."""

    run: list[str] = field(default_factory=lambda: list(ATTACK_NAMES))
    gallery_distractors: int = 1000  # >= 1000 non-members: TPR at FPR = 1e-3 is supported
    decoder_steps: int = 1200  # decoder_steps // 100 epochs at most (the GAN decoder's budget; see decoder_objective)
    decoder_identities: int = 150
    # Inverting Gradients, breaching's recipe (TV 0.2, signed Adam, step decay, restarts keeping the
    # best loss); iterations per restart. The simulated single-image probe's budget is the plateau of
    # bench/bench_gradient_budget.py's PSNR-vs-iterations curve (demo φ0 of 2026-12-03, mean of two images:
    # 19.6 dB at 200, 18.9 at 1000, 19.3 at 3000, SSIM 0.53 / 0.58 / 0.69; per image 16.7-25.5 dB at >= 200:
    # restarts keep the lowest loss, not the best PSNR; ~40 s per probe on 2 cores, two probes per audit).
    # The logged-update inversions
    # (~20 per audit) gain PSNR with budget no faster than their null over clients does, so they
    # keep a small budget (100 x 4 restarts: ~8 s each).
    gradient_iterations: int = 1000
    gradient_restarts: int = 4
    gradient_tv_weight: float = 0.2
    gradient_batch_size: int = 1
    gradient_logged_iterations: int = 100
    gradient_logged_restarts: int = 4
    gradient_logged_dummies: int = 8
    # the logged update's local epochs as the attacker models them (attacks.multistep): "none" (matched as one
    # step), or unrolled with the run's epochs, batches and momentum: "independent", "shared", or "dimitrov"
    # (Dimitrov et al. 2022's epoch order-invariant prior, weight gradient_logged_epoch_prior_weight)
    gradient_logged_epoch_prior: str = "none"
    gradient_logged_epoch_prior_weight: float = 1.0
    # the aggregate of a round's updates (consecutive broadcasts' difference: all the server learns under secure
    # aggregation): "auto" inverts it when the server saw no client's own update, "always", "never"
    gradient_logged_aggregate: str = "auto"
    # membership inference (offline LiRA, attacks.membership_attack): fresh non-member identities
    # (>= 1,000 supports TPR at FPR 1e-2, >= 10,000 at 1e-3) and simulated shadow releases per client
    membership_nonmembers: int = 2000
    membership_shadows: int = 64
    # embedding-inversion decoder (attacks.inversion): "gan" = pixel L1 + feature loss through the observed
    # model + a DCGAN discriminator, "l1" = PrivacyFace's; decoder_steps // 100 epochs at most, stopped
    # once the feature cosine on held-out public identities has not improved for decoder_patience epochs
    decoder_objective: str = "gan"
    decoder_holdout_fraction: float = 0.1
    decoder_patience: int = 3
    # white-box optimisation inversion of the same vectors (attacks.whitebox), scored by the same evaluator:
    # Adam steps per restart, restarts per vector (a lower bound at this budget)
    whitebox: bool = True
    whitebox_iterations: int = 100
    whitebox_restarts: int = 2
    # the evaluator's architecture, another than the attacked model's (an evaluator of φ0's architecture
    # passes reconstructions optimised through the observed model more often than real faces): "auto" =
    # MobileFaceNet (IResNet-18 where φ0 is a MobileFaceNet) or a registered backbone name, with a second
    # evaluator of φ0's architecture beside it (agreement of the two on every reconstruction); "same" /
    # None for one evaluator, of φ0's architecture
    evaluator_architecture: str | None = "auto"
    # simulated gradient probe: beside recovered labels (LLG, iDLG for one image) the same attack given the
    # true labels (the upper bound); GradInversion's BatchNorm prior (0 = off; the default `tiny`
    # backbone has no BatchNorm, a weight > 0 needs one, e.g. mobilefacenet)
    gradient_granted_labels_row: bool = True
    gradient_bn_prior_weight: float = 0.0

    def __post_init__(self) -> None:
        bad = [a for a in self.run if a not in ATTACK_NAMES]
        if bad:
            raise ValueError(f"attacks.run: unknown attack(s) {bad}; choose from {list(ATTACK_NAMES)}")
        self._check_inversion_and_probe()
        for name in (
            "gallery_distractors",
            "decoder_steps",
            "decoder_identities",
            "gradient_iterations",
            "gradient_restarts",
            "gradient_batch_size",
            "gradient_logged_iterations",
            "gradient_logged_restarts",
            "gradient_logged_dummies",
            "membership_nonmembers",
        ):
            _positive_int(f"attacks.{name}", getattr(self, name))
        _positive_int("attacks.membership_shadows", self.membership_shadows, 2)
        if (self.gradient_logged_epoch_prior, self.gradient_logged_epoch_prior_weight) != ("none", 1.0):
            from attacks.multistep import check_epoch_prior  # imports torch: only for a non-default prior

            try:
                check_epoch_prior(self.gradient_logged_epoch_prior, self.gradient_logged_epoch_prior_weight)
            except ValueError as exc:
                raise ValueError(f"attacks.gradient_logged_{exc}") from exc
        if self.gradient_logged_aggregate not in ("auto", "always", "never"):
            raise ValueError(
                "attacks.gradient_logged_aggregate must be 'auto', 'always' or 'never', "
                f"got {self.gradient_logged_aggregate!r}"
            )
        tv = self.gradient_tv_weight
        if isinstance(tv, bool) or not isinstance(tv, (int, float)) or not (math.isfinite(tv) and tv >= 0):
            raise ValueError(f"attacks.gradient_tv_weight must be a finite number >= 0, got {tv!r}")

    def _check_inversion_and_probe(self) -> None:
        """Validate the decoder, white-box, second-evaluator and probe options (errors name the value)."""
        from federated_core.models.registry import BACKBONE_NAMES

        if self.decoder_objective not in ("gan", "l1"):
            raise ValueError(f"attacks.decoder_objective must be 'gan' or 'l1', got {self.decoder_objective!r}")
        frac = self.decoder_holdout_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise ValueError(f"attacks.decoder_holdout_fraction must be a number in [0, 1), got {frac!r}")
        _positive_int("attacks.decoder_patience", self.decoder_patience, 0)
        if self.decoder_patience > 0 and frac == 0:
            raise ValueError(
                f"attacks.decoder_patience = {self.decoder_patience} stops on held-out identities: "
                "set attacks.decoder_holdout_fraction > 0 (or decoder_patience = 0)"
            )
        for name in ("whitebox", "gradient_granted_labels_row"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"attacks.{name} must be true or false, got {getattr(self, name)!r}")
        _positive_int("attacks.whitebox_iterations", self.whitebox_iterations)
        _positive_int("attacks.whitebox_restarts", self.whitebox_restarts)
        arch = self.evaluator_architecture
        if arch is not None and arch not in ("auto", "same", *BACKBONE_NAMES):
            raise ValueError(
                f"attacks.evaluator_architecture must be 'auto', 'same' or one of {', '.join(BACKBONE_NAMES)}, "
                f"got {arch!r}"
            )
        w = self.gradient_bn_prior_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
            raise ValueError(f"attacks.gradient_bn_prior_weight must be a finite number >= 0, got {w!r}")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``: nested tables merge key by key, anything else (lists included)
    replaces the base value."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def bench_methods() -> list[MethodSpec]:
    """Every variant the claims table compares (`privaudit.claims.CLAIMS`), labelled as it names them."""
    fedfr_rows = {
        "fedfr-fedavg": {"public_data": False, "contrastive": False, "dfc": False},  # FedFR Table 1, row 2
        "fedfr-hn": {"public_data": True, "contrastive": False, "dfc": False},  # row 3
        "fedfr-contrastive": {"public_data": True, "contrastive": True, "dfc": False},  # row 4
    }
    return [
        MethodSpec("fedpe"),
        MethodSpec("fedgc"),
        MethodSpec("fedgc-cos"),
        MethodSpec("fedfr"),
        *(MethodSpec("fedfr", params=params, label=label) for label, params in fedfr_rows.items()),
        MethodSpec("fedfs"),
        MethodSpec("shared-centers"),
        MethodSpec("privacyface"),
        MethodSpec("privacyface-nonoise"),
        MethodSpec("privacyface", params={"release": "none"}, label="privacyface-phi"),
        MethodSpec("privacyface", params={"release": "random-control"}, label="privacyface-random"),
    ]


def default_methods() -> list[MethodSpec]:
    """Shared class centers vs sanitised clusters vs nothing shared, with the paper baselines."""
    return [
        MethodSpec(name)
        for name in (
            "fedpe",
            "shared-centers",
            "fedface",
            "fedgc",
            "fedfr",
            "fedfs",
            "privacyface",
            "privacyface-nonoise",
            "noisy-centers",
            "privacyface-e2e",
        )
    ]


@dataclass
class Scenario:
    """One audit: data, federation, methods, privacy, attacks, scale, device, seed, output."""

    name: str = "demo"
    scale: Literal["tiny", "demo", "bench", "paper"] = "demo"
    seed: int = 0
    device: str = "cpu"
    out: str = "out"
    data: DataSpec = field(default_factory=DataSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    federation: FederationSpec = field(default_factory=FederationSpec)
    methods: list[MethodSpec] = field(default_factory=default_methods)
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    attacks: AttackSpec = field(default_factory=AttackSpec)
    # several seeds: `seeds` (a list) or `repeats` (seed, seed + 1, ...); each method is run per seed
    # and compared with `compare_to` by paired differences over seeds (privaudit.comparisons)
    seeds: list[int] | None = None
    repeats: int = 1
    compare_to: str = "fedpe"

    def __post_init__(self) -> None:
        _positive_int("repeats", self.repeats)
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
            if self.repeats != 1 and self.repeats != len(self.seeds):
                raise ValueError(f"give seeds or repeats, not both (seeds={self.seeds}, repeats={self.repeats})")
        if len(self.seed_list()) > 1 and self.compare_to not in [m.key for m in self.methods]:
            raise ValueError(
                f"compare_to must name one of the scenario's methods {[m.key for m in self.methods]} "
                f"to compare the others with over seeds, got {self.compare_to!r}"
            )
        keys = [m.key for m in self.methods]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"methods: each variant needs a distinct label, repeated: {repeated}")
        if not self.methods:
            raise ValueError("methods: at least one method is needed")

    # ------------------------------------------------------------------ presets
    @classmethod
    def demo(cls, **changes: Any) -> "Scenario":
        """The embedded default: synthetic faces at 32 px, 4 clients (one population group's
        worth of identities each is not forced: balanced partition), every method."""
        return replace(cls(), **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> "Scenario":
        """The same pipeline at test size (seconds per method)."""
        base = cls(
            name="tiny",
            scale="tiny",
            pretrain=PretrainSpec(identities=24, images_per_identity=6, epochs=2, embedding_dim=32),
            federation=FederationSpec(
                num_clients=3,
                identities_per_client=6,
                images_per_identity=4,
                test_identities=12,
                test_images_per_identity=3,
                rounds=2,
                batch_size=16,
            ),
            privacy=PrivacySpec(audit_trials=200, threshold_fraction=0.5),  # T = 3 of 6 classes: auditable
            attacks=AttackSpec(
                gallery_distractors=30,
                decoder_steps=300,
                decoder_identities=24,
                gradient_iterations=10,
                gradient_restarts=2,
                gradient_logged_iterations=10,
                gradient_logged_restarts=2,
                gradient_logged_dummies=4,
                membership_nonmembers=1000,
                membership_shadows=8,
                decoder_patience=1,
                whitebox_iterations=10,
                whitebox_restarts=1,
                evaluator_architecture=None,  # one evaluator, as before: the suite stays fast
            ),
        )
        return replace(base, **changes)

    @classmethod
    def preset(cls, scale: str, **changes: Any) -> "Scenario":
        """The scenario of a scale preset (`SCALES`), with ``changes`` applied."""
        builders = {"tiny": cls.tiny, "demo": cls.demo, "bench": cls.bench, "paper": cls.paper}
        if scale not in builders:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        return builders[scale](**changes)

    @classmethod
    def bench(cls, **changes: Any) -> "Scenario":
        """The claims benchmark on 2 CPU cores (docs/bench.md, docs/reproduction.md): synthetic faces at
        difficulty 0, a weak φ0 (100 public identities) that federated training must improve, 10
        clients × 10 identities, 10 rounds, 30,000 impostor pairs so TAR@FAR=1e-3 means something, every
        variant the claims table needs (`bench_methods`), the k-NN attack only, 3 seeds."""
        base = cls(
            name="bench",
            scale="bench",
            data=DataSpec(difficulty=0.0),
            pretrain=PretrainSpec(identities=100, images_per_identity=16, epochs=10, embedding_dim=128),
            federation=FederationSpec(
                num_clients=10,  # 20 clients: ~50 min per seed of the 13 variants on 2 cores (docs/bench.md)
                identities_per_client=10,
                images_per_identity=12,
                test_identities=200,
                test_images_per_identity=6,
                rounds=10,  # 20 rounds lift TAR@1e-3 further, at twice the cost
                local_epochs=2,
                lr=0.05,
                genuine_pairs=3000,
                impostor_pairs=30000,
            ),
            methods=bench_methods(),
            privacy=PrivacySpec(threshold_fraction=0.5, audit_trials=2000),
            attacks=AttackSpec(run=["knn"]),
            repeats=3,
        )
        return replace(base, **changes)

    @classmethod
    def paper(cls, **changes: Any) -> "Scenario":
        """GPU scale: 112 px MobileFaceNet, PrivacyFace's 4 clients of one group each are
        approximated by 4 balanced clients of 1,000 identities."""
        base = cls(
            name="paper",
            scale="paper",
            device="cuda",
            data=DataSpec(resolution=112),
            pretrain=PretrainSpec(
                identities=10_000,
                images_per_identity=30,
                epochs=20,
                backbone="mobilefacenet",
                embedding_dim=512,
                head="arcface",
            ),
            federation=FederationSpec(
                num_clients=4,
                identities_per_client=1000,
                images_per_identity=30,
                test_identities=1000,
                test_images_per_identity=10,
                rounds=10,
                batch_size=128,
                lr=0.001,
            ),
            privacy=PrivacySpec(threshold_fraction=512 / 7000),
        )
        return replace(base, **changes)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scenario":
        """Build from a plain dict; a ``scale`` key starts from that preset, and every other key
        deep-merges onto it (a partial ``[federation]`` table changes only the keys it names)."""
        data = dict(data)
        if "scale" in data:
            if data["scale"] not in SCALES:
                raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {data['scale']!r}")
            data = deep_merge(cls.preset(data["scale"]).to_dict(), data)
        return from_dict(cls, data)

    @classmethod
    def from_folder(cls, path: str | Path, scale: str = "demo", **data: Any) -> "Scenario":
        """A scenario for your own face folder in one call: the ``scale`` preset with ``[data]
        source = "folder"`` at ``path`` and any other ``[data]`` keys (``resolution``, ``split`` as a
        dict of counts or fractions, ``pairs``, ``bin``, ``min_images_per_identity``, ``align``, ...)."""
        return cls.from_dict({"scale": scale, "data": {"source": "folder", "path": str(path), **data}})

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        """Read a TOML or YAML scenario file (safe loaders)."""
        return cls.from_dict(load_document(path))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def seed_list(self) -> list[int]:
        """The seeds every method runs with: ``seeds``, else ``seed, seed + 1, ...`` (``repeats``)."""
        return list(self.seeds) if self.seeds is not None else [self.seed + i for i in range(self.repeats)]

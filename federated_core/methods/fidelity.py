"""Fidelity presets: one hyper-parameter ``fidelity`` that sets a method's other hyper-parameters to
what a source prescribes.

* ``"default"`` — this package's defaults (today's behaviour; no faithfulness claim, so it never
  reports deviations);
* ``"paper"`` — what the method's paper prescribes (`federated_core.methods` docstrings cite the
  equations);
* ``"official-code"`` — what the authors' public code does where it differs from the paper.

A method supports a subset (``fidelities`` on its class; a value outside it is a `ValueError`
naming the method, the value and the allowed ones). Hyper-parameters passed explicitly still win;
every explicit value that differs from what the chosen preset prescribes is reported in
``hyperparameters()["fidelity_deviations"]`` as ``{param: {"preset": value, "used": value}}``
(empty when the run is faithful to the preset). A preset may list other values the source also
uses (``also_faithful``: e.g. FedGC's Table 5 runs CosFace and ArcFace as well as Softmax):
choosing one of them is not a deviation.

Constructor parameters that some preset prescribes default to `UNSET`; `resolve_fidelity` fills
them from the preset, else from the class's ``default`` values.

`fidelity_note(method_name, fidelity)` is the one-line description of a preset (and its known
caveats) for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

FIDELITIES = ("default", "paper", "official-code")


class _Unset:
    """The default of a constructor argument a fidelity preset may set ("not passed")."""

    _instance: "_Unset | None" = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<from the fidelity preset>"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Preset:
    """What a fidelity preset prescribes.

    Attributes:
        values: ``param -> value`` the preset sets when the parameter is not passed.
        also_faithful: ``param -> other values`` the source also uses; passing one of them
            explicitly is not a deviation.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    also_faithful: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


PresetFn = Callable[[Mapping[str, Any]], Preset]


def check_fidelity(method: str, fidelity: Any, allowed: Sequence[str]) -> str:
    """``fidelity`` if ``method`` supports it, else a `ValueError` naming all three."""
    if not isinstance(fidelity, str) or fidelity not in allowed:
        raise ValueError(
            f"method {method!r} does not support fidelity={fidelity!r}; allowed: {list(allowed)} "
            f"(known presets: {list(FIDELITIES)})"
        )
    return fidelity


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor's truth value is ambiguous: compare by identity
        return a is b


def resolve_fidelity(
    method: str,
    fidelity: Any,
    allowed: Sequence[str],
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    presets: Mapping[str, PresetFn],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Resolve the preset-controlled hyper-parameters of ``method``.

    Args:
        method: the method's name (for errors).
        fidelity: the chosen preset (checked against ``allowed``).
        given: ``param -> value or UNSET`` as passed to the constructor.
        defaults: ``param -> value`` of the ``"default"`` fidelity (today's behaviour); must hold
            every key of ``given``.
        presets: ``fidelity -> fn(explicit) -> Preset`` for every allowed fidelity but
            ``"default"``; ``explicit`` holds only the parameters that were passed (a preset may
            depend on them, e.g. FedGC's regulariser form on the chosen loss).

    Returns:
        ``(resolved, deviations)``: every parameter of ``given`` with its value, and
        ``{param: {"preset": value, "used": value}}`` for each explicit value that differs from
        what the preset prescribes (not counting the preset's ``also_faithful`` values).
    """
    fidelity = check_fidelity(method, fidelity, allowed)
    missing = sorted(set(given) - set(defaults))
    if missing:
        raise KeyError(f"no default value for preset-controlled parameter(s) {missing} of {method!r}")
    explicit = {k: v for k, v in given.items() if v is not UNSET}
    preset = Preset() if fidelity == "default" else presets[fidelity](explicit)
    unknown = sorted(set(preset.values) - set(given))
    if unknown:
        raise KeyError(f"the {fidelity!r} preset of {method!r} sets parameter(s) {unknown} the method does not take")
    resolved = {k: explicit[k] if k in explicit else preset.values.get(k, defaults[k]) for k in given}
    deviations: dict[str, dict[str, Any]] = {}
    for name, used in explicit.items():
        if name not in preset.values:
            continue
        wanted = preset.values[name]
        if _same(used, wanted) or any(_same(used, v) for v in preset.also_faithful.get(name, ())):
            continue
        deviations[name] = {"preset": wanted, "used": used}
    return resolved, deviations


def fidelity_note(method_name: str, fidelity: str = "default") -> str:
    """One line on what ``fidelity`` means for the registered method ``method_name`` and its
    known caveats (for the report). A `ValueError` if the method is unknown or does not support
    that fidelity."""
    from federated_core.methods.base import method_class

    cls = method_class(method_name)
    check_fidelity(method_name, fidelity, tuple(getattr(cls, "fidelities", ("default",))))
    return str(cls.fidelity_note_for(method_name, fidelity))


__all__ = ["FIDELITIES", "UNSET", "Preset", "check_fidelity", "fidelity_note", "resolve_fidelity"]

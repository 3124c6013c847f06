"""The search space of params.yaml turned into Optuna suggestions and back into params overrides."""

from __future__ import annotations

from typing import Any

import optuna

from facetraits.config import SWEEP_TARGETS as TARGETS
from facetraits.config import FloatRange, IntRange, SearchSpace


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """One value per knob present in the space, keyed by its sweep.space name."""
    values: dict[str, Any] = {}
    for name in TARGETS:
        spec = getattr(space, name)
        if spec is None:
            continue
        if isinstance(spec, IntRange):
            values[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, FloatRange):
            values[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        else:
            values[name] = trial.suggest_categorical(name, list(spec.choices))
    return values


def as_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """{'lr': 0.01, 'augment_strength': 0.5} -> {'train': {'lr': 0.01, 'augment': {'strength': 0.5}}}."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        node = nested
        *parents, leaf = TARGETS[name]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested

"""What a sweep leaves for the train stage and for people: best params, the trials table, Optuna's plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from facetraits.config import read_yaml
from facetraits.errors import ConfigError
from facetraits.files import atomic_directory, atomic_path, atomic_write_text
from facetraits.sweep.space import as_overrides
from facetraits.spreadsheet import write_csv

TRIAL_COLUMNS = ("number", "state", "value")


def trials_table(study: optuna.Study | None) -> pd.DataFrame:
    """One row per trial, best first: number, state, value, each searched param, worker, failure reason."""
    rows = []
    for trial in study.get_trials(deepcopy=False) if study is not None else []:
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                **{f"param_{k}": v for k, v in trial.params.items()},
                "epochs": len(trial.intermediate_values),
                "seconds": trial.duration.total_seconds() if trial.duration else None,
                "worker": trial.user_attrs.get("worker"),
                "fail_reason": trial.user_attrs.get("fail_reason"),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=list(TRIAL_COLUMNS))
    return table.sort_values(["value", "number"], ascending=[False, True], na_position="last").reset_index(drop=True)


def best_overrides(study: optuna.Study | None) -> dict[str, Any]:
    """The best trial as params overrides; no study or no completed trial -> no overrides."""
    if study is None or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {"study": None if study is None else study.study_name, "overrides": {}}
    best = study.best_trial
    return {"study": study.study_name, "trial": best.number, "value": best.value, "overrides": as_overrides(best.params)}


def write_best_params(path: Path, best: dict[str, Any]) -> None:
    atomic_write_text(path, yaml.safe_dump(best, sort_keys=False))


def read_best_params(path: Path) -> dict[str, Any]:
    """The `overrides` mapping of a best_params.yaml; errors name the file."""
    content = read_yaml(path, "best-params file")
    if not isinstance(content, dict) or not isinstance(content.get("overrides"), dict):
        raise ConfigError(f"{path}: expected a mapping with an 'overrides' mapping")
    return content["overrides"]


def write_figures(study: optuna.Study | None, folder: Path) -> list[Path]:
    """Optimization history, parameter importances and parallel coordinates (matplotlib: no plotly here).

    The folder is replaced whole (empty without a study), so no figure of an earlier sweep stays."""
    from optuna.visualization import matplotlib as plots

    complete = [] if study is None else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers = {} if study is None else {"optimization_history.png": plots.plot_optimization_history}
    if len(complete) >= 2 and len({k for t in complete for k in t.params}) >= 1:
        makers["param_importances.png"] = plots.plot_param_importances
        makers["parallel_coordinate.png"] = plots.plot_parallel_coordinate
    written = []
    with atomic_directory(folder) as tmp:
        for name, make in makers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    axes = make(study)
                except (ValueError, RuntimeError):
                    continue  # e.g. importances need variation among the completed trials
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(tmp / name, format="png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(folder / name)
    return written


def write_trials(study: optuna.Study | None, path: Path) -> pd.DataFrame:
    table = trials_table(study)
    write_csv(table, path, index=False)
    return table

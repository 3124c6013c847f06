"""What a sweep leaves for the train stage and for people: best params, the trials table, Optuna's plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from facetraits.config import StudyParams, read_yaml
from facetraits.errors import ConfigError
from facetraits.files import atomic_directory, atomic_write_text
from facetraits.sweep.space import as_overrides

if TYPE_CHECKING:
    from facetraits.tracking import StageRun
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult

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


SWEEP_OUTPUTS = ("best_params.yaml", "trials.csv", "figures")  # under results/sweep, as in dvc.yaml


def default_storage(out_dir: Path) -> str:
    """sweep.storage null: an SQLite file beside the sweep's outputs."""
    return f"sqlite:///{(Path(out_dir) / 'optuna.db').resolve()}"


def sweep_stage(
    params: StudyParams, prepared: Path, fingerprint: str, out_dir: Path, run: StageRun | None
) -> StageResult:
    """The sweep stage: sweep.n_trials trials (none: train uses params.yaml as written, and no MLflow run is
    made), the best as overrides."""
    best_file = out_dir / "best_params.yaml"
    if params.sweep.n_trials == 0:
        write_trials(None, out_dir / "trials.csv")
        write_figures(None, out_dir / "figures")
        write_best_params(best_file, best_overrides(None))
        return StageResult("sweep skipped (sweep.n_trials: 0): train uses params.yaml as written")
    # imported only when trials run: Lightning and its Optuna integration take ~8-14 s to import,
    # the default study's whole sweep stage without them is a few seconds
    from facetraits.sweep.study import finished_trials, run_sweep, study_name
    from facetraits.sweep.trial_runs import log_missing_trial_runs

    assert run is not None, "the sweep stage has a run whenever it has trials (pipelines/sweep.py)"
    storage = params.sweep.storage or default_storage(out_dir)
    name = study_name(params, fingerprint)
    run.set_tags({"optuna.study": name, "optuna.storage": storage.split("@")[-1]})
    study = run_sweep(params, prepared, storage, name, out_dir / "cache", run.run_id)
    log_missing_trial_runs(params.tracking, run.run_id, name, study.get_trials(deepcopy=False))
    table = write_trials(study, out_dir / "trials.csv")
    figures = write_figures(study, out_dir / "figures")
    best = best_overrides(study)
    write_best_params(best_file, best)
    metrics = {
        "sweep/n_trials": finished_trials(study),
        "sweep/n_pruned": int((table["state"] == "PRUNED").sum()),
        "sweep/n_failed": int((table["state"] == "FAIL").sum()),
        "sweep/best_value": best.get("value"),
    }
    artifacts = [*((figure, "sweep/figures") for figure in figures), (out_dir / "trials.csv", "sweep"), (best_file, "sweep")]
    summary = f"study {study.study_name}: {finished_trials(study)} trials, best mean val Pearson {best.get('value')}"
    return StageResult(summary, metrics, artifacts)

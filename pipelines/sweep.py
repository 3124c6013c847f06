"""DVC stage `sweep`: an Optuna study over sweep.space; its best trial becomes results/sweep/best_params.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetraits.config import load_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.sweep.outputs import best_overrides, write_best_params, write_figures, write_trials
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("results/sweep"))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        fingerprint = load_prepared(args.prepared).meta["fingerprint"]
        ready_outputs(*(args.out / name for name in ("best_params.yaml", "trials.csv", "figures")))
        with stage_run(params.tracking, "sweep", flatten_params(params)) as run:
            run.set_tags({TAG_FINGERPRINT: fingerprint})
            study = None
            if params.sweep.n_trials > 0:
                # imported only when trials run: Lightning and its Optuna integration take ~8-14 s to import,
                # the default study's whole sweep stage without them is a few seconds
                from facetraits.sweep.study import finished_trials, run_sweep, study_name
                from facetraits.sweep.trial_runs import log_trial_run, missing_trial_runs

                storage = params.sweep.storage or f"sqlite:///{(args.out / 'optuna.db').resolve()}"
                name = study_name(params, fingerprint)
                run.set_tags({"optuna.study": name, "optuna.storage": storage.split("@")[-1]})
                study = run_sweep(params, args.prepared, storage, name, args.out / "cache", run.run_id)
                trials = study.get_trials(deepcopy=False)
                for trial in missing_trial_runs(params.tracking, run.run_id, [t for t in trials if t.state.is_finished()]):
                    log_trial_run(params.tracking, run.run_id, name, trial)
                table = write_trials(study, args.out / "trials.csv")
                for figure in write_figures(study, args.out / "figures"):
                    run.log_artifact(figure, "sweep/figures")
                run.log_artifact(args.out / "trials.csv", "sweep")
                run.log_metrics({"sweep/n_trials": finished_trials(study), "sweep/n_pruned": int((table["state"] == "PRUNED").sum()),
                                 "sweep/n_failed": int((table["state"] == "FAIL").sum())})  # fmt: skip
            else:
                write_trials(None, args.out / "trials.csv")
                write_figures(None, args.out / "figures")
            best = best_overrides(study)
            write_best_params(args.out / "best_params.yaml", best)
            run.log_artifact(args.out / "best_params.yaml", "sweep")
            if best.get("value") is not None:
                run.log_metrics({"sweep/best_value": best["value"]})
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if study is None:
        print("sweep skipped (sweep.n_trials: 0): train uses params.yaml as written")
    else:
        print(f"study {study.study_name}: {finished_trials(study)} trials, best mean val Pearson {best.get('value')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

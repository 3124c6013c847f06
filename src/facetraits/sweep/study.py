"""Studies, trials and workers: many processes (and nodes) share one Optuna study through its storage."""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from facetraits.config import StudyParams, SweepParams, merge_overrides
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.errors import ConfigError
from facetraits.models.face_module import MONITOR
from facetraits.models.training import cached_frozen_features, fit_attributes, fit_heads_on_features, run_signature
from facetraits.sweep.space import as_overrides, suggest
from facetraits.sweep.trial_runs import log_trial_run

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
JOURNAL_PREFIX = "journal:"
ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_WORKER = "worker"
ATTR_FAIL_REASON = "fail_reason"


def study_name(params: StudyParams, fingerprint: str) -> str:
    """`sweep.study` plus a hash of everything a trial depends on: a changed setup starts a new study."""
    key = run_signature(
        space=params.sweep.space, model=params.model, train=params.train, max_epochs=params.sweep.max_epochs,
        fingerprint=fingerprint,
    )  # fmt: skip
    return f"{params.sweep.study}-{key[:8]}"


def make_storage(url: str, sweep: SweepParams) -> optuna.storages.BaseStorage:
    """RDB URLs (sqlite, postgresql, ...) get heartbeats so a dead worker's trial is failed and retried."""
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=sweep.heartbeat_s,
            grace_period=2 * sweep.heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retry),
        )


def open_study(name: str, url: str, sweep: SweepParams, sampler_seed: int) -> optuna.Study:
    """Create or join the named study (sampler and pruner are per process: Optuna does not store them)."""
    pruners: dict[str, optuna.pruners.BasePruner] = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sweep.max_epochs),
        "none": optuna.pruners.NopPruner(),
    }
    try:
        return optuna.create_study(
            study_name=name,
            storage=make_storage(url, sweep),
            sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            pruner=pruners[sweep.pruner],
            direction="maximize",
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - storage drivers raise their own types
        raise ConfigError(f"sweep.storage: cannot open study '{name}' at {url}: {exc}") from None


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def usable_cores() -> int:
    """The cores this process may run on: under SLURM or taskset that is the allocation, not the whole node."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sampler_seed(seed: int, trials_so_far: int, worker: int) -> int:
    """Distinct per worker and per (re)run, so a resumed study does not replay its first run's random draws."""
    return int(np.random.SeedSequence([seed, trials_so_far, worker]).generate_state(1)[0])


def worker_quotas(remaining: int, workers: int) -> list[int]:
    """Split the remaining trials so the total is exact: each worker runs its own share."""
    base, extra = divmod(remaining, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker process needs; picklable so it can cross a spawn."""

    params: StudyParams
    prepared: str
    study: str
    storage: str
    n_trials: int
    index: int
    cache_dir: str
    device: str | None
    threads: int
    sampler_seed: int


def objective(trial: optuna.Trial, params: StudyParams, data: PreparedData, cache_dir: Path) -> float:
    """Best mean val Pearson of one trial; frozen-backbone trials train heads on cached features."""
    overrides = as_overrides(suggest(trial, params.sweep.space))
    overrides.setdefault("train", {}).update(  # a trial is scored on val, so it fits on train alone
        max_epochs=params.sweep.max_epochs, progress_bar=False, devices=1, num_nodes=1, strategy="auto", fit_on="train"
    )
    trial_params = merge_overrides(params, overrides, source=f"trial {trial.number}")
    pruning = PyTorchLightningPruningCallback(trial, monitor=MONITOR)
    if trial_params.model.trainable_blocks == 0:
        features = cached_frozen_features(data, trial_params.model, trial_params.train.seed, cache_dir)
        history = fit_heads_on_features(data, features, trial_params.model, trial_params.train, [pruning])
    else:
        with tempfile.TemporaryDirectory(prefix=f"trial-{trial.number}-") as tmp:
            fit = fit_attributes(
                data, data.attributes, trial_params.model, trial_params.train, Path(tmp), extra_callbacks=[pruning],
                run_test=False,
            )  # fmt: skip
            history = fit.history
    value = float(history[MONITOR].max()) if len(history) else math.nan
    if not np.isfinite(history["train/loss"]).all() or not np.isfinite(value):
        # a NaN loss still yields finite correlations (undefined r counts as 0), so check the loss itself
        raise FloatingPointError(f"training diverged: train/loss {history['train/loss'].tolist()}, {MONITOR} {value}")
    return value


def run_worker(spec: WorkerSpec) -> None:
    """One worker: joins the study and runs its share of trials; each finished trial gets its MLflow run."""
    if spec.device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.device
    torch.set_num_threads(spec.threads)
    data = load_prepared(Path(spec.prepared))
    study = open_study(spec.study, spec.storage, spec.params.sweep, spec.sampler_seed)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    tracking = spec.params.tracking

    def run(trial: optuna.Trial) -> float:
        trial.set_user_attr(ATTR_WORKER, worker)
        try:
            return objective(trial, spec.params, data, Path(spec.cache_dir))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr(ATTR_FAIL_REASON, repr(exc))  # Optuna logs the reason but does not store it
            raise

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        parent = study.user_attrs.get(ATTR_PARENT_RUN)
        if parent:
            log_trial_run(tracking, parent, study.study_name, trial)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(run, n_trials=spec.n_trials, catch=(Exception,), callbacks=[record])


def _devices(workers: int) -> list[str | None]:
    if not torch.cuda.is_available():
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [ids[i % len(ids)] for i in range(workers)]


def run_sweep(
    params: StudyParams, prepared: Path, storage: str, name: str, cache_dir: Path, parent_run_id: str | None
) -> optuna.Study:
    """Bring the study up to sweep.n_trials finished trials with sweep.workers processes on this node."""
    study = open_study(name, storage, params.sweep, params.sweep.seed)
    if parent_run_id is not None:
        study.set_user_attr(ATTR_PARENT_RUN, parent_run_id)
    remaining = max(0, params.sweep.n_trials - finished_trials(study))
    quotas = [q for q in worker_quotas(remaining, params.sweep.workers) if q > 0]
    if not quotas:
        return study
    data = load_prepared(prepared)
    blocks = params.sweep.space.trainable_blocks
    if (blocks.low if blocks is not None else params.model.trainable_blocks) == 0:
        cached_frozen_features(data, params.model, params.train.seed, cache_dir)  # once, before the workers start
    threads = max(1, usable_cores() // len(quotas))
    specs = [
        WorkerSpec(
            params,
            str(prepared),
            name,
            storage,
            quota,
            index,
            str(cache_dir),
            device,
            threads,
            sampler_seed(params.sweep.seed, len(study.trials), index),
        )
        for index, (quota, device) in enumerate(zip(quotas, _devices(len(quotas)), strict=True))
    ]
    if len(specs) == 1:
        run_worker(specs[0])
    else:
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=run_worker, args=(spec,), name=f"sweep-worker-{spec.index}") for spec in specs
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.name for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"sweep worker(s) {failed} exited abnormally; their trials are failed by heartbeat")
    return study


def worker_spec_for_join(
    params: StudyParams, prepared: Path, storage: str, name: str, n_trials: int, cache_dir: Path
) -> WorkerSpec:
    """`facetraits sweep-worker`: one more worker, on this node, for a study that already exists."""
    return WorkerSpec(
        params, str(prepared), name, storage, n_trials, os.getpid(), str(cache_dir), None, usable_cores(),
        sampler_seed(params.sweep.seed, 0, os.getpid()),
    )  # fmt: skip

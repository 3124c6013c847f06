"""Optuna hyperparameter sweeps: search space, trials, parallel workers, MLflow records."""

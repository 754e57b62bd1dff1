"""From the marts to a champion: folds and candidates, backtests, MLflow tracking and registry, the
promotion gate, the evaluation report.
"""

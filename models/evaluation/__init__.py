"""Offline evaluation: splits of an event log, activity segments, scoring after business rules, backtests.

Pure numpy/pandas like the rest of ``models/``: pipelines read the warehouse and settings and call in.
"""

from models.evaluation.backtest import FROM_SCRATCH, BacktestResult, FoldStart, backtest
from models.evaluation.evaluate import EvaluationConfig, FoldScore, score_fold
from models.evaluation.segments import SEGMENTS, SegmentBounds
from models.evaluation.splits import EventLog, Fold, global_time_folds, leave_last_n_fold, random_ratio_folds

__all__ = [
    "SEGMENTS",
    "BacktestResult",
    "FROM_SCRATCH",
    "FoldStart",
    "EvaluationConfig",
    "EventLog",
    "Fold",
    "FoldScore",
    "SegmentBounds",
    "backtest",
    "global_time_folds",
    "leave_last_n_fold",
    "random_ratio_folds",
    "score_fold",
]

"""Search spaces for hyper-parameter tuning, declared by each model beside its constructor.

Plain data, no tuning library: a model says which constructor parameters are worth searching and
over what range (``Recommender.search_space()``); ``pipelines/training/tuning.py`` translates the
specs into its sampler's calls. Keeping the ranges next to the model keeps them true when the model
changes (a test checks every spec names a parameter the constructor takes, with its default inside).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FloatRange:
    """A real parameter in [low, high]; ``log`` samples its order of magnitude (learning rates, penalties)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"invalid float range [{self.low}, {self.high}] (log={self.log})")

    def contains(self, value) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class IntRange:
    """An integer parameter in [low, high]; ``log`` for sizes that matter by ratio (factors, neighbours)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"invalid integer range [{self.low}, {self.high}] (log={self.log})")

    def contains(self, value) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    """One of a few values (an embedding size, a flag)."""

    options: tuple

    def __post_init__(self):
        if len(self.options) < 2:
            raise ValueError(f"a choice needs at least two options, got {self.options}")

    def contains(self, value) -> bool:
        return value in self.options


ParamSpec = FloatRange | IntRange | Choice
SearchSpace = dict[str, ParamSpec]

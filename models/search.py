"""Search spaces for hyper-parameter tuning, declared by each model beside its constructor.

Plain data, no tuning library: a model says which constructor parameters are worth searching and
over what range (``Recommender.search_space()``); ``pipelines/training/tuning.py`` translates the
specs into its sampler's calls. Keeping the ranges next to the model keeps them true when the model
changes (a test checks every spec names a parameter the constructor takes, with its default inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class _Range:
    """A number in [low, high]; ``log`` samples its order of magnitude rather than its value."""

    low: float
    high: float
    log: bool = False
    kind: ClassVar[str] = "number"
    types: ClassVar[tuple[type, ...]] = (int, float)

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"invalid {self.kind} range [{self.low}, {self.high}] (log={self.log})")

    def contains(self, value) -> bool:
        return isinstance(value, self.types) and self.low <= value <= self.high


@dataclass(frozen=True)
class FloatRange(_Range):
    """A real parameter; ``log`` for learning rates and penalties."""

    kind: ClassVar[str] = "float"


@dataclass(frozen=True)
class IntRange(_Range):
    """An integer parameter; ``log`` for sizes that matter by ratio (factors, neighbours)."""

    kind: ClassVar[str] = "integer"
    types: ClassVar[tuple[type, ...]] = (int,)


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

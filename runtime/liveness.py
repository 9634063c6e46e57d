"""Which steps' outputs may share one kept array: those whose values are never needed
at the same time.

The executor keeps each step's output from run to run; with an array of its own per
output a set of input shapes took a few times a run's activations (a LLaMA of 135M
parameters at 128 tokens 153 MB; sharing, 8 MB, and the run 1.1x as fast, its
outputs in the caches). A step's value is needed from the step that makes it to the last
step that reads it, or reads anything that may be the same array (a view of it, a
numpy result that may return an operand, a value a kernel call takes in); steps that
another step runs (put off to their reader) make and read at their reader's place.
Steps whose outputs are fresh arrays get a color each such that two values needed at
once never share one (greedy interval coloring, in step order); the executor keeps
one array per color and shape. Colors are given per kind of output (the executor's:
its type in the IR), whose arrays likely have one shape: a color that values of
several shapes took holds an array for each. Colored across kinds, ResNet50's
outputs kept 20.9 MB at one image, a LLaMA of 135M parameters' 7.9 MB at 128
tokens, GPT-2's 9.1 and BERT-base's 7.2; by kind, 14.8, 4.9, 5.2 and 4.8. A value
returned is needed to the end (and the executor leaves shape functions' values,
copied at the end of a first run, arrays of their own).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StepUse:
    """What liveness needs of one step, by slot (Executor.slots)."""

    result: int
    reads: tuple[int, ...]
    """Every slot the step reads, when it runs."""
    aliases: tuple[int, ...] = ()
    """Slots whose arrays the result may be, or be a view of (its operands, for a step
    whose result may be one), or that are given the result's array (values a kernel
    call takes in)."""
    put_off: bool = False
    """Whether the step runs where the first step to read its result runs."""
    fresh: bool = False
    """Whether its output is an array of its own that it may share (`output_colors`)."""
    kind: Hashable = None
    """What its output shares colors with: outputs of another kind take others."""


def output_colors(steps: Sequence[StepUse], to_the_end: Iterable[int]) -> tuple[dict[int, int], set[int]]:
    """The color of each fresh step's output, by step index, such that outputs needed
    at the same place never share a color, nor outputs of different kinds; and the
    steps whose color an earlier step had (they write over an array made earlier in the run). `to_the_end`: slots
    needed until the run ends."""
    places = _places(steps)
    group = _Groups()
    for step in steps:
        for alias in step.aliases:
            group.union(step.result, alias)
    last: dict[int, float] = {}
    for step, (_first, place) in zip(steps, places):
        for slot in step.reads:
            root = group.find(slot)
            last[root] = max(last.get(root, -1), place)
    for slot in to_the_end:
        last[group.find(slot)] = float("inf")
    colors: dict[int, int] = {}
    reusing: set[int] = set()
    ends: list[float] = []  # where each color's latest value is last needed
    kinds: list[Hashable] = []  # and the kind of its values
    for index, (step, (first, _place)) in enumerate(zip(steps, places)):
        if not step.fresh:
            continue
        end = max(last.get(group.find(step.result), first), first)
        color = next((color for color, until in enumerate(ends) if until < first and kinds[color] == step.kind), None)
        if color is None:
            color = len(ends)
            ends.append(end)
            kinds.append(step.kind)
        else:
            reusing.add(index)
            ends[color] = end
        colors[index] = color
    return colors, reusing


def _places(steps: Sequence[StepUse]) -> list[tuple[int, int]]:
    """Where each step makes its result and reads its operands: its own index, or for a
    step put off to its reader, from its own index to where that reader runs (the
    first step after it reading its result; to the end if none does)."""
    readers: dict[int, list[int]] = {}
    for index, step in enumerate(steps):
        for slot in step.reads:
            readers.setdefault(slot, []).append(index)
    places = [(index, index) for index in range(len(steps))]
    for index in reversed(range(len(steps))):
        if steps[index].put_off:
            after = [reader for reader in readers.get(steps[index].result, []) if reader > index]
            places[index] = (index, max((places[reader][1] for reader in after), default=len(steps)))
    return places


class _Groups:
    """Union-find over slots: slots whose arrays may be one."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, slot: int) -> int:
        root = self.parent.setdefault(slot, slot)
        while root != self.parent[root]:
            root = self.parent[root]
        while slot != root:
            self.parent[slot], slot = root, self.parent[slot]
        return root

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)

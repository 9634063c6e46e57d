"""onnxruntime's time a run by node, set beside sparsec's steps (`sparsec bench --profile`).

onnxruntime's profile (`SessionOptions.enable_profiling`) times every node it runs, but
its nodes are not the model's. It fuses a convolution with the normalization and
activation after it and names the fused node after the chain's last output
(`r21_nchwc` for the Conv whose Relu outputs `r21`, on its NCHWc path), or keeps the
convolution's name (a `FusedConv`); it adds layout reorders of its own. sparsec's steps
are named by their ONNX node: a convolution's, with its normalization folded and its
activation fused. So each of onnxruntime's nodes is traced back to the model's node it
grew from (`Origins.step_of`): the node of its name, else the producer of the output it
is named after, then up the chain, through nodes with one input that is not a constant,
to the first node that is one of sparsec's steps; a step another takes in (a
normalization put off to the convolution after it) counts as the step that takes it
in. A node that reaches none (a layout reorder, or a Concat of computed inputs that
sparsec's convolutions write in place) is left unmatched and counted apart.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from sparsec.errors import SparsecError

LONGEST_CHAIN = 16
"""The most nodes `Origins.step_of` walks up from where it starts: a fused chain is a
convolution, its normalization (or the Mul and Add it was exported as), its
activation, perhaps a residual Add."""


@dataclass(frozen=True)
class NodeTime:
    """One of onnxruntime's nodes in a profiled run."""

    name: str
    op: str
    seconds: float
    """Per run, on average over the counted runs."""


@dataclass(frozen=True)
class Baseline:
    """onnxruntime's time a run, beside sparsec's steps."""

    by_step: dict[str, float]
    """Seconds a run of onnxruntime's nodes, by the step they grew from."""
    unmatched: list[NodeTime]
    """Nodes that grew from no step."""
    seconds: float
    """A whole run's time."""

    @property
    def outside_nodes(self) -> float:
        return self.seconds - sum(self.by_step.values()) - sum(node.seconds for node in self.unmatched)


@dataclass(frozen=True)
class RunProfile:
    nodes: list[NodeTime]
    seconds: float
    """A whole run's time (`model_run`), on average over the counted runs."""


def run_profile(events: Sequence[dict], counted: Sequence[bool]) -> RunProfile:
    """The node times of the runs of a profile's `events` (onnxruntime's JSON trace)
    that `counted` marks, one flag per run in the order they ran: a node's events fall
    within its run's `model_run` span."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(runs) != len(counted):
        raise SparsecError(f"onnxruntime's profile holds {len(runs)} runs where {len(counted)} were made: its trace format is not one this sparsec reads")
    spans = [(run["ts"], run["ts"] + run["dur"]) for run, count in zip(runs, counted) if count]
    starts = [start for start, _end in spans]  # in order, the runs one after another
    totals: dict[str, float] = {}
    ops: dict[str, str] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        run = bisect.bisect_right(starts, event["ts"]) - 1
        if run >= 0 and event["ts"] <= spans[run][1]:
            node = name.removesuffix("_kernel_time")
            totals[node] = totals.get(node, 0.0) + event["dur"]
            ops[node] = event.get("args", {}).get("op_name", "")
    per_run = 1e-6 / max(len(spans), 1)  # the trace's times are microseconds
    return RunProfile(
        [NodeTime(node, ops[node], total * per_run) for node, total in totals.items()],
        sum(end - start for start, end in spans) * per_run,
    )


def beside_steps(ort: RunProfile, graph: onnx.GraphProto, steps: Mapping[str, str]) -> Baseline:
    """`ort`'s node times by the step each node grew from in `graph` (`Origins`)."""
    origins = Origins(graph, steps)
    by_step: dict[str, float] = {}
    unmatched: list[NodeTime] = []
    for node in ort.nodes:
        step = origins.step_of(node.name)
        if step is None:
            unmatched.append(node)
        else:
            by_step[step] = by_step.get(step, 0.0) + node.seconds
    return Baseline(by_step, unmatched, ort.seconds)


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """The initializers and what nodes compute from them alone (a Constant, an
    Unsqueeze of a normalization's scale): inputs that do not make a chain."""
    constants = {initializer.name for initializer in graph.initializer} | {""}
    for node in graph.node:  # in topological order, as ONNX requires
        if all(name in constants for name in node.input):
            constants.update(node.output)
    return constants


class Origins:
    """Which of sparsec's steps each of onnxruntime's nodes grew from, in one model.
    `steps` maps the name of each of sparsec's steps (its ONNX node's) to the step
    whose time holds its own: itself, or the one that takes it in."""

    def __init__(self, graph: onnx.GraphProto, steps: Mapping[str, str]):
        self.nodes = {node.name: node for node in graph.node if node.name}
        self.producers = {output: node for node in graph.node for output in node.output if output}
        self.constants = constant_tensors(graph)
        self.steps = steps

    def step_of(self, ort_name: str) -> str | None:
        """The step `ort_name` grew from, or None."""
        node = self._start(ort_name)
        for _ in range(LONGEST_CHAIN):
            if node is None:
                return None
            if node.name in self.steps:
                return self.steps[node.name]
            computed = [name for name in node.input if name not in self.constants]
            if len(computed) != 1:
                return None
            node = self.producers.get(computed[0])
        return None

    def _start(self, ort_name: str) -> onnx.NodeProto | None:
        """The model's node `ort_name` names (`_named`), as it is, or without the
        prefix and suffix onnxruntime gives a fusion of a few nodes ("fused fc1/
        MatMulAddFusion"), or then without the part after its last slash."""
        bare = ort_name.removeprefix("fused ")
        for name in filter(None, dict.fromkeys([ort_name, bare, bare.rpartition("/")[0]])):
            node = self._named(name)
            if node is not None:
                return node
        return None

    def _named(self, name: str) -> onnx.NodeProto | None:
        """The node of that name, else the producer of the longest output name `name`
        starts with before an underscore (onnxruntime names a node it fuses or moves
        to its NCHWc layout after the chain's output: `r21_nchwc`, `r70_mul_nchwc`)."""
        if name in self.nodes:
            return self.nodes[name]
        parts = name.split("_")
        for end in range(len(parts), 0, -1):
            producer = self.producers.get("_".join(parts[:end]))
            if producer is not None:
                return producer
        return None

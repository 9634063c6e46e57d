"""Dense kernels: every value of the weight, for layers too dense for a mask to pay."""

from __future__ import annotations

from xdsl.dialects import llvm
from xdsl.dialects.builtin import f16, f32, i1, i64
from xdsl.ir import SSAValue

from sparsec.runtime.codegen.base import ColumnStepKernel, F32x16, Kernel
from sparsec.runtime.codegen.builder import vector


class DenseKernel(ColumnStepKernel):
    """sparsec's dense float16 kernel, the baseline its sparse kernels must beat: a0 holds
    all N x K values row-major; a step loads 64 of them and widens them. The partial
    step loads weights and inputs under constant lane masks (columns below K)."""

    def row_state(self, row: SSAValue, first_step: SSAValue) -> list[SSAValue]:
        b = self.b
        self.values = b.element_ptr(self.a0, b.mul(row, b.const(self.key.cols, i64)), self.value_type)
        return []

    def prefetch_next_row(self, step: SSAValue, state: list[SSAValue]) -> None:
        b = self.b
        ahead = b.element_ptr(self.values, b.add(b.mul(step, b.const(64, i64)), b.const(self.key.cols, i64)), self.value_type)
        b.prefetch(ahead, self.value_type.bitwidth // 8)  # a step: 64 values, as many lines as bytes a value

    def decode(self, row: SSAValue, step: SSAValue, state: list[SSAValue], partial: int):
        b, half = self.b, self.value_type == f16
        weights, masks = [], []
        for q in range(4):
            at = b.element_ptr(self.values, b.add(b.mul(step, b.const(64, i64)), b.const(16 * q, i64)), self.value_type)
            lanes = b.vector_const([int(16 * q + lane < partial) for lane in range(16)], i1) if partial else None
            if lanes is not None:
                masks.append(lanes)
            loaded = b.load_lanes(at, vector(self.value_type, 16), lanes)
            weights.append(b.fpext(loaded, F32x16) if half else loaded)
        return weights, [], masks


class ScalarDenseKernel(Kernel):
    """The dense kernel for portable targets: one multiply-add per weight."""

    def build(self) -> llvm.FuncOp:
        b, key = self.b, self.key

        def row_body(row: SSAValue, _state) -> list[SSAValue]:
            first = b.mul(row, b.const(key.cols, i64))

            def column_body(col: SSAValue, state) -> list[SSAValue]:
                (acc,) = state
                return [b.fmuladd(self.value(self.a0, b.add(first, col)), self.x_at(self.batch_row, col), acc)]

            (acc,) = b.loop(b.const(0, i64), b.const(key.cols, i64), [b.const(0.0, f32)], column_body)
            self.finish(acc, row, self.batch_row)
            return []

        return self.for_each_row(row_body)

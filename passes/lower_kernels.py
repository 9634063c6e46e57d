"""Lower layers on packed weights to kernel ops specialized to each layer.

    lower-kernels

Gemm (trans_a = 0, alpha = beta = 1), MatMul with a packed 2-D weight on the right, and
Conv (1-D to 3-D) with a packed weight become `sparse.matmul` / `sparse.conv`, each
naming the kernel it needs (sparsec.kernels.KernelKey). A grouped Conv keeps its groups
(the runtime runs every group's rows, each on its group's input channels); depthwise
ones (one input channel a group) stay.
A bias (Gemm's C, MatMul followed by an Add of a 1-D weight, Conv's B) and a Relu, Gelu
(exact or tanh) or SiLU (`nn.swish` with alpha 1) that is the only user are fused as the
epilogue; an activation after an op that only moves a matrix product's values
(`matching.MOVING_OPS`: the reshape GPT-2's Conv1D puts there, a transpose) moves
before it to fuse. A Relu of a Concat that only it reads is
applied part by part first (`_relu_by_parts`): fused into the convolutions that make
parts, and dropped on parts that cannot be negative.

The kernel kind follows the packed encoding: n:m runs along the input channels use the
`nm` kernel (a convolution with a window too, where a group's input channels are
whole runs: the kernel reads its columns run by run, KernelKey.run_major),
blocks along the output channels the `block` kernel (where each group's rows are whole
blocks); anything else (and structured weights whose runs do not lie
along a flattened row) the `bitmask` kernel, except that a bitmask weight too dense
for its mask to pay (sparsity under 1/16 with float16 values) uses the `dense` kernel
on its decoded values.

A 1-D or 2-D Conv whose float32 weight pruning left unpacked (a first convolution of
three channels, a layer under min-elements) becomes a `sparse.conv` too, when its
kernel can run as an implicit convolution (at most WINDOW_MAX_COLUMNS columns): the
`block` kernel on its float32 values in blocks of UNPACKED_BLOCK output channels (the
`bitmask` kernel on its non-zeros where groups would split a block), with the Relu
fused, on the worker threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin
from xdsl.dialects.builtin import IntegerAttr, StringAttr, f16, f32, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from sparsec.dialects import StoredWeightOp, nn, nn_index
from sparsec.dialects.kernel_ops import SparseConvOp, SparseMatMulOp
from sparsec.dialects.sparse import PackedWeightOp
from sparsec.matching import MOVING_OPS
from sparsec.kernels import UNPACKED_BLOCK, WINDOW_MAX_COLUMNS, KernelKey, epilogue_activation, epilogue_name, group_block, key_for
from sparsec.packing import Encoding


def kernel_kind(weight: StoredWeightOp, transposed: bool, groups: int = 1) -> str:
    """The kernel that can read this weight's encoding in its flattened (out, in) view,
    for a convolution of `groups` groups (an unpacked weight: in blocks of
    UNPACKED_BLOCK rows, where its rows are whole blocks). The block kernel runs a
    group's rows as whole row blocks only (without groups the last block of a packed
    weight may run past the last row): where groups split the blocks it takes smaller
    ones that fit (`group_block`), and where none of two rows or more does, the bitmask
    kernel reads the weight's non-zeros instead."""
    rows = weight.tensor_type.get_shape()[1 if transposed else 0]
    if not isinstance(weight, PackedWeightOp):
        block = group_block(UNPACKED_BLOCK, rows, groups)
        return "block" if block > 1 and (rows // groups) % block == 0 else "bitmask"
    encoding = weight.encoding
    shape = weight.tensor_type.get_shape()
    stored_axis = encoding.axis.data
    canonical_axis = 1 - stored_axis if transposed else stored_axis
    dense_bytes = math.prod(shape) * (2 if encoding.values == f16 else 4)
    match encoding.encoding:
        case Encoding.BITMASK if weight.packed_bytes.value.data >= dense_bytes:
            return "dense"
        case Encoding.NM if canonical_axis == 1 and (math.prod(shape[2:]) == 1 or shape[1] % encoding.m.data == 0):
            return "nm"
        case Encoding.BLOCK if canonical_axis == 0 and group_block(encoding.block_size.data, rows, groups) > 1:
            return "block"
        case _:
            return "bitmask"


def kernel_key(weight: StoredWeightOp, transposed: bool, epilogue: str, groups: int = 1) -> KernelKey:
    return key_for(weight, transposed, kernel_kind(weight, transposed, groups), epilogue, groups)


def _packed(value: SSAValue) -> PackedWeightOp | None:
    return value.owner if isinstance(value.owner, PackedWeightOp) else None


def _only_user(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def _vector_bias(add: Operation | None, value: SSAValue, rows: int) -> SSAValue | None:
    """The 1-D weight that `add` adds to `value`, if it is a bias of `rows` elements."""
    if not isinstance(add, nn.AddOp):
        return None
    other = add.rhs if add.lhs is value else add.lhs
    is_weight = isinstance(other.owner, nn.WeightOp)
    return other if is_weight and other.type.get_shape() == (rows,) else None  # pyright: ignore


def _fused_activation(value: SSAValue) -> nn.ReluOp | nn.GeluOp | nn.SwishOp | None:
    """The Relu, Gelu or SiLU (Swish with alpha 1) that is the only user of `value`."""
    user = _only_user(value)
    if isinstance(user, nn.ReluOp | nn.GeluOp) or (isinstance(user, nn.SwishOp) and user.alpha.value.data == 1.0):
        return user
    return None


def _activation_through_view(value: SSAValue) -> nn.ReluOp | nn.GeluOp | nn.SwishOp | None:
    """Where `value`'s only user is a view whose only user is an activation that fuses
    (`_fused_activation`), move the activation before the view and return it: GPT-2's
    Conv1D layers reshape their product back to (batch, sequence, width) between the
    Gemm and the GELU."""
    view = _only_user(value)
    if not isinstance(view, MOVING_OPS) or view.operands[0] is not value:
        return None
    activation = _fused_activation(view.results[0])
    if activation is None:
        return None
    moved = type(activation).create(operands=[value], result_types=[value.type], properties=dict(activation.properties))
    moved.location = activation.location
    moved.results[0].name_hint = activation.results[0].name_hint
    view.parent_block().insert_op_before(moved, view)  # pyright: ignore
    view.operands[0] = moved.results[0]
    activation.results[0].replace_all_uses_with(view.results[0])
    activation.detach()
    activation.erase()
    return moved


def _kernel_properties(key: KernelKey) -> dict:
    return {"kernel": StringAttr(key.symbol), "kind": StringAttr(key.kind), "epilogue": StringAttr(key.epilogue)}


def _epilogue(bias: bool, activation: Operation | None) -> str:
    if isinstance(activation, nn.GeluOp):
        return epilogue_name(bias, "gelu" if activation.approximate.data == "none" else "gelu_tanh")
    return epilogue_name(bias, {nn.ReluOp: "relu", nn.SwishOp: "swish"}.get(type(activation)))


def _lower_matmul(op: nn.GemmOp | nn.MatMulOp) -> None:
    x, w = op.operands[0], op.operands[1]
    weight = _packed(w)
    if weight is None or len(weight.tensor_type.get_shape()) != 2:
        return
    bias: SSAValue | None = None
    fused: list[Operation] = [op]
    if isinstance(op, nn.GemmOp):
        if op.trans_a.value.data or op.alpha.value.data != 1.0 or (op.c is not None and op.beta.value.data != 1.0):
            return
        transposed = not op.trans_b.value.data
        rows = weight.tensor_type.get_shape()[0 if not transposed else 1]
        if op.c is not None:
            if op.c.type.get_shape() not in ((rows,), (1, rows)):  # pyright: ignore
                return
            bias = op.c
    else:
        transposed = True
        rows = weight.tensor_type.get_shape()[1]
        add = _only_user(op.results[0])
        bias = _vector_bias(add, op.results[0], rows)
        if bias is not None:
            fused.append(add)  # pyright: ignore
    last = fused[-1]
    activation = _fused_activation(last.results[0]) or _activation_through_view(last.results[0])
    if activation is not None:
        fused.append(activation)
        last = activation
    key = kernel_key(weight, transposed, _epilogue(bias is not None, activation))
    operands = [[x], [w], [bias] if bias is not None else []]
    new = SparseMatMulOp.build(
        operands=operands,
        properties={**_kernel_properties(key), "transposed": IntegerAttr(int(transposed), i64)},
        result_types=[last.results[0].type],
    )
    _swap(op, last, new, fused)


def _conv_weight(op: nn.ConvOp) -> StoredWeightOp | None:
    """The weight a kernel of `op` reads: packed, or unpacked float32 of 1-D or 2-D
    windows and at most WINDOW_MAX_COLUMNS columns; else None.

    In numpy an unpacked convolution copies out its input windows (im2col) for a matrix
    product. The block kernel (blocks of 8 then), reading its inputs in place, beat that on
    every layer measured, one thread then two, ms, numpy against the kernel: 3 -> 64
    channels 7x7 stride 2 at 224 x 224 4.4 / 3.2 against 2.8 on one thread; 64 ->
    64 3x3 at 56 x 56 4.1 / 1.9 against 2.7 / 1.3; 256 -> 64 1x1 at 56 x 56 1.36 / 0.87
    against 1.17 / 0.72; 512 -> 2048 1x1 at 7 x 7 2.0 / 1.6 against 1.4 / 0.9; 512 ->
    512 3x3 at 7 x 7 3.6 / 2.4 against 3.3 / 1.9. One layer ran as fast in either, 1024
    -> 256 1x1 at 14 x 14 (1.37 / 0.66 against 1.30 / 0.72). The bitmask kernel, one
    input load a multiply-add, had lost to BLAS from about 200 columns."""
    weight = op.w.owner
    if isinstance(weight, PackedWeightOp):
        return weight
    if not isinstance(weight, nn.WeightOp) or weight.tensor_type.element_type != f32:
        return None
    shape = weight.tensor_type.get_shape()
    return weight if len(shape) in (3, 4) and math.prod(shape[1:]) <= WINDOW_MAX_COLUMNS else None


def _lower_conv(op: nn.ConvOp) -> None:
    weight = _conv_weight(op)
    if weight is None or not 3 <= len(weight.tensor_type.get_shape()) <= 5 or not _groups_split(weight, op.group.value.data):
        return
    fused: list[Operation] = [op]
    activation = _fused_activation(op.output)
    if activation is not None:
        fused.append(activation)
    key = kernel_key(weight, False, _epilogue(op.b is not None, activation), op.group.value.data)
    properties = {**op.properties, **_kernel_properties(key)}
    new = SparseConvOp.build(
        operands=[[op.x], [op.w], [op.b] if op.b is not None else []],
        properties=properties,
        result_types=[fused[-1].results[0].type],
    )
    _swap(op, fused[-1], new, fused)


def _groups_split(weight: StoredWeightOp, groups: int) -> bool:
    """Whether a convolution's `groups` split its weight's rows for a kernel (one call
    takes every group's rows, or one call per group): not depthwise weights (one input
    channel a group), which the runtime runs as weighted pools, 9 multiply-adds per
    output for a 3x3 kernel."""
    return groups == 1 or weight.tensor_type.get_shape()[1] > 1


_SIGN_KEEPING = (nn.MaxPoolOp, nn.AveragePoolOp, nn.GlobalAveragePoolOp, nn.ReshapeOp, nn.FlattenOp, nn.TransposeOp)
"""Ops whose result is non-negative where their (first) operand is."""


def _non_negative(value: SSAValue) -> bool:
    """Whether `value` holds no negative number by construction: a Relu's result (or a
    kernel op's that fused one), a pool, reshape or transpose of one, a Concat of them."""
    op = value.owner
    if isinstance(op, nn.ReluOp):
        return True
    if isinstance(op, SparseConvOp | SparseMatMulOp):
        return epilogue_activation(op.epilogue.data) == "relu"
    if isinstance(op, _SIGN_KEEPING):
        return _non_negative(op.operands[0])
    return isinstance(op, nn.ConcatOp) and all(_non_negative(part) for part in op.operands)


def _relu_by_parts(relu: nn.ReluOp) -> None:
    """Apply a Relu of a Concat that only it reads to the Concat's parts instead, when
    each part either cannot be negative (it keeps no Relu) or is a convolution's
    result that only the Concat reads (it gets a Relu of its own, which lowering fuses
    into its kernel). The Relu then costs nothing, where over the whole Concat it was a
    pass over its output in memory (ShuffleNet's stride-2 units: a Concat of an
    average pool of a Relu's result and a convolution)."""
    concat = relu.operands[0].owner
    if not isinstance(concat, nn.ConcatOp) or _only_user(concat.output) is not relu:
        return
    parts = list(concat.operands)
    convolved = [isinstance(part.owner, nn.ConvOp) and _only_user(part) is concat for part in parts]
    if not all(fuses or _non_negative(part) for part, fuses in zip(parts, convolved)):
        return
    block = concat.parent_block()
    assert block is not None
    for index, (part, fuses) in enumerate(zip(parts, convolved)):
        if fuses:
            part_relu = nn.ReluOp.build(operands=[part], result_types=[part.type])
            part_relu.results[0].name_hint = part.name_hint
            block.insert_op_before(part_relu, concat)
            concat.operands[index] = part_relu.results[0]
    concat.output.name_hint = relu.output.name_hint
    relu.output.replace_all_uses_with(concat.output)
    block.erase_op(relu)


def _swap(first: Operation, last: Operation, new: Operation, fused: list[Operation]) -> None:
    block = first.parent_block()
    assert block is not None
    block.insert_op_before(new, last)
    new.location = first.location
    new.results[0].name_hint = last.results[0].name_hint
    last.results[0].replace_all_uses_with(new.results[0])
    for op in reversed(fused):
        block.erase_op(op)


@dataclass(frozen=True)
class LowerKernelsPass(ModulePass):
    """Replace Gemm/MatMul/Conv on packed weights (and unpacked 1-D and 2-D Convs) with
    kernel ops, fusing bias and Relu, Gelu or SiLU."""

    name = "lower-kernels"

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        for relu in [candidate for candidate in op.walk() if isinstance(candidate, nn.ReluOp)]:
            _relu_by_parts(relu)
        for candidate in list(op.walk()):
            if candidate.parent is None:
                continue  # erased as part of an earlier fusion
            if isinstance(candidate, nn.GemmOp | nn.MatMulOp):
                _lower_matmul(candidate)
            elif isinstance(candidate, nn.ConvOp):
                _lower_conv(candidate)

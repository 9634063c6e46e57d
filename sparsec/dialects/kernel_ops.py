"""`sparse` dialect ops that compute with a packed weight through a generated kernel.

    %y = sparse.matmul %x, %w, %b {kernel = "spmm_nm3_4_f16_512x784_bias_relu", kind = "nm",
                                   epilogue = "bias_relu", transposed = 0 : i64}
           : (tensor<?x784xf32>, tensor<512x784xf32>, tensor<512xf32>) -> tensor<?x512xf32>

`sparse.matmul` is y = epilogue(x @ W^T + b) with W in its (out, in) view: the packed
weight as stored, or its transpose when `transposed = 1` (MatMul's (in, out) layout).
`sparse.conv` is nn.conv with the same kernel attributes, computed by the kernel's
implicit variant reading the input in place (1-D and 2-D), or by im2col followed by the
kernel (one call per group). `kernel` is the symbol of the specialized kernel
(sparsec.kernels).
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import I64, IntegerAttr, StringAttr, TensorType
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from sparsec.dialects import shapes
from sparsec.dialects.nn import ConvolutionOp, FloatComputeOp, _broadcasts_to
from sparsec.dialects.shapes import DYNAMIC, Shape, ShapeError
from sparsec.kernels import EPILOGUES, KINDS


def _check_kernel(op: FloatComputeOp) -> None:
    kind, epilogue = op.properties["kind"], op.properties["epilogue"]
    if kind.data not in KINDS:  # pyright: ignore
        raise VerifyException(f"'{op.name}': kind must be one of {', '.join(KINDS)}, got '{kind.data}'")  # pyright: ignore
    if epilogue.data not in EPILOGUES:  # pyright: ignore
        raise VerifyException(f"'{op.name}': epilogue must be one of {', '.join(EPILOGUES)}, got '{epilogue.data}'")  # pyright: ignore


@irdl_op_definition
class SparseMatMulOp(FloatComputeOp):
    """y = epilogue(x @ W^T + b) through a generated sparse kernel."""

    name = "sparse.matmul"

    x = operand_def(TensorType)
    w = operand_def(TensorType)
    b = opt_operand_def(TensorType)
    kernel = prop_def(StringAttr)
    kind = prop_def(StringAttr)
    epilogue = prop_def(StringAttr)
    transposed = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)

    def weight_view(self, w: Shape) -> tuple[int, int]:
        """(N, K): output and input channels of the weight."""
        return (w[1], w[0]) if self.transposed.value.data else (w[0], w[1])

    def infer_shape(self, operand_shapes: list[Shape]) -> Shape:
        x, w = operand_shapes[0], operand_shapes[1]
        if len(w) != 2 or len(x) < 1:
            raise ShapeError(f"needs a matrix weight and an input of rank >= 1, got {shapes.fmt(x)} and {shapes.fmt(w)}")
        n, k = self.weight_view(w)
        if x[-1] not in (k, DYNAMIC):
            raise ShapeError(f"input has {x[-1]} features, the weight {k}")
        if len(operand_shapes) == 3 and not _broadcasts_to(operand_shapes[2], (n,)):
            raise ShapeError(f"bias of shape {shapes.fmt(operand_shapes[2])} does not fit {n} outputs")
        return (*x[:-1], n)

    def verify_(self) -> None:
        _check_kernel(self)
        super().verify_()


@irdl_op_definition
class SparseConvOp(ConvolutionOp):
    """nn.conv with a fused epilogue through a generated sparse kernel: its implicit
    variant reading the input in place (1-D and 2-D), else im2col and the kernel, a
    call per group on its input channels and weight rows."""

    name = "sparse.conv"
    ONNX_OP: ClassVar[str] = "Conv"

    kernel = prop_def(StringAttr)
    kind = prop_def(StringAttr)
    epilogue = prop_def(StringAttr)

    def verify_(self) -> None:
        _check_kernel(self)
        super().verify_()


KernelOp = SparseMatMulOp | SparseConvOp
"""Either op that computes through a generated kernel."""

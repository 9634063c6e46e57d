// fuse-swish: SiLU written out, x * sigmoid(x), as PyTorch exports LLaMA's gated MLP
// before opset 24, becomes one nn.swish, which lower-kernels fuses into the layer
// before it.
// RUN: sparsec opt %s --split-input-file -p fuse-swish | filecheck %s
// RUN: sparsec opt %s --split-input-file -p fuse-swish,pack-bitmask,lower-kernels | filecheck %s --check-prefix=KERNEL
// RUN: not sparsec opt %s -p 'fuse-swish{alpha=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-swish' has no option 'alpha' (options: none)

// LLaMA's MLP: down(silu(gate(x)) * up(x)), the Sigmoid's product either way round.
func.func @main(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %gate = nn.weight "gate" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [0.0, 1.0]]> : tensor<4x2xf32>
  %up = nn.weight "up" dense<[[0.5, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]> : tensor<4x2xf32>
  %down = nn.weight "down" dense<1.0> : tensor<2x4xf32>
  %g = nn.matmul %x, %gate : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32>
  %s = nn.sigmoid %g : (tensor<?x2xf32>) -> tensor<?x2xf32>
  %a = nn.mul %s, %g : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32>
  %u = nn.matmul %x, %up : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32>
  %h = nn.mul %a, %u : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32>
  %y = nn.matmul %h, %down : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
// CHECK:      %g = nn.matmul %x, %gate
// CHECK-NEXT: %a = nn.swish %g : (tensor<?x2xf32>) -> tensor<?x2xf32>
// CHECK-NEXT: %u = nn.matmul %x, %up
// CHECK-NEXT: %h = nn.mul %a, %u
// CHECK-NOT:  nn.sigmoid

// KERNEL:      %a = sparse.matmul %x, %gate {kernel = "{{.*}}", kind = "bitmask", epilogue = "swish", transposed = 1 : i64}
// KERNEL-NEXT: %u = nn.matmul %x, %up
// KERNEL-NEXT: %h = nn.mul %a, %u

// -----
// Left alone: a Sigmoid that something else reads too; a Sigmoid's product with
// another tensor (a gate).
func.func @main(%x: tensor<2x4xf32>, %w: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
  %s1 = nn.sigmoid %x : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %y1 = nn.mul %x, %s1 : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  %s2 = nn.sigmoid %x : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %y2 = nn.mul %w, %s2 : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %y1, %y2, %s1 : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.swish
// CHECK:     %y1 = nn.mul %x, %s1
// CHECK:     %y2 = nn.mul %w, %s2

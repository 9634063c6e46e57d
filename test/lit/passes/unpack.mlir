// unpack restores the dense weight, rounded to the packed value type, and keeps the pattern.
// RUN: sparsec opt %s -p pack-bitmask,unpack | filecheck %s
// RUN: sparsec opt %s -p pack-bitmask | sparsec opt -p unpack | filecheck %s

func.func @main(%x: tensor<?x8xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[0.0, -4.0, 3.0, 0.0, 8.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.4, 4.0, 3.0, 0.0, 0.0]]> : tensor<2x8xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<{{\[\[}}0.0, -4.0, 3.0, 0.0, 8.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.30004883, 0.39990234, 4.0, 3.0, 0.0, 0.0]]> : tensor<2x8xf32>

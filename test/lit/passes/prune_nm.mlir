// n:m: in each run of m values along the input channels, the n smallest become zero.
// RUN: sparsec opt %s --split-input-file -p 'prune-magnitude{pattern=nm n=2 m=4 min-elements=0}' | filecheck %s

// Gemm, trans_b = 1: W is (out, in) as stored, runs go along rows.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, -4.0, 3.0, 2.0, 8.0, 7.0, -6.0, 5.0], [0.1, 0.2, 0.3, 0.4, 4.0, 3.0, 2.0, 1.0]]> : tensor<2x8xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<{{\[\[}}0.0, -4.0, 3.0, 0.0, 8.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.4, 4.0, 3.0, 0.0, 0.0]]> : tensor<2x8xf32>

// -----
// MatMul with the weight on the right is (in, out): runs go down the columns.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" dense<[[1.0], [2.0], [3.0], [4.0], [8.0], [7.0], [6.0], [5.0]]> : tensor<8x1xf32>
  %y = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<{{\[\[}}0.0], [0.0], [3.0], [4.0], [8.0], [7.0], [0.0], [0.0]]> : tensor<8x1xf32>

// -----
// A short tail run behaves as if padded with zeros: the tail [9, 10] of 10 values has
// two padding zeros, which absorb both prunes.
func.func @main(%x: tensor<?x10xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]]> : tensor<1x10xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x10xf32>, tensor<1x10xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK: dense<{{\[\[}}0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 7.0, 8.0, 9.0, 10.0]]> : tensor<1x10xf32>

// Unstructured: exactly floor(sparsity * N) smallest magnitudes become zero; ties go
// to the earlier position, so equal values still get the requested count.
// RUN: sparsec opt %s --split-input-file -p 'prune-magnitude{sparsity=0.5 min-elements=0}' | filecheck %s

func.func @main(%x: tensor<?x4xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, -8.0, 3.0, -2.0], [0.5, 6.0, -7.0, 4.0]]> : tensor<2x4xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[}}0.0, -8.0, 0.0, 0.0], [0.0, 6.0, -7.0, 4.0]]> : tensor<2x4xf32>

// -----
// Equal values: the first floor(0.5 * 6) = 3 by position are pruned.
func.func @main(%x: tensor<?x3xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<2.0> : tensor<2x3xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x3xf32>, tensor<2x3xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[}}0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]> : tensor<2x3xf32>

// -----
// Pre-existing zeros count toward the target: nothing else changes.
func.func @main(%x: tensor<?x4xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" dense<[[0.0, 5.0, 0.0, 1.0]]> : tensor<1x4xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<1x4xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK: dense<{{\[\[}}0.0, 5.0, 0.0, 1.0]]> : tensor<1x4xf32>

// -----
// Only weight operands of Gemm/MatMul/Conv are pruned: the bias stays dense.
func.func @main(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32>
  %b = nn.weight "b" dense<[1.0, 2.0]> : tensor<2xf32>
  %y = nn.gemm %x, %w, %b : (tensor<?x2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[}}0.0, 0.0], [3.0, 4.0]]>
// CHECK: %b = nn.weight "b" dense<[1.0, 2.0]> : tensor<2xf32>

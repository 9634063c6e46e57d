// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<?x4xf32>, %w: tensor<3x5xf32>) -> tensor<?x3xf32> {
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<3x5xf32>) -> tensor<?x3xf32>
  func.return %y : tensor<?x3xf32>
}
// CHECK: 'nn.gemm': inner dimensions differ: A is ?x4 (trans_a = 0), B is 3x5 (trans_b = 1)

// -----
func.func @main(%x: tensor<2x4xf32>, %w: tensor<4x3xf32>, %c: tensor<2xf32>) -> tensor<2x3xf32> {
  %y = nn.gemm %x, %w, %c : (tensor<2x4xf32>, tensor<4x3xf32>, tensor<2xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.gemm': C of shape 2 does not broadcast to 2x3

// -----
func.func @main(%x: tensor<2x4x5xf32>) -> tensor<2x4xf32> {
  %y = nn.gemm %x, %x : (tensor<2x4x5xf32>, tensor<2x4x5xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}
// CHECK: 'nn.gemm': A and B must be matrices, got 2x4x5 and 2x4x5

// -----
func.func @main(%x: tensor<3x2x4xf32>, %w: tensor<5x3xf32>) -> tensor<3x2x3xf32> {
  %y = nn.matmul %x, %w : (tensor<3x2x4xf32>, tensor<5x3xf32>) -> tensor<3x2x3xf32>
  func.return %y : tensor<3x2x3xf32>
}
// CHECK: 'nn.matmul': inner dimensions differ: 3x2x4 @ 5x3

// -----
func.func @main(%x: tensor<2x4xf32>, %w: tensor<4x3xf16>) -> tensor<2x3xf32> {
  %y = nn.matmul %x, %w : (tensor<2x4xf32>, tensor<4x3xf16>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.matmul': operands must share one element type

// -----
func.func @main(%x: tensor<2x4xf32>, %w: tensor<4x3xf32>) -> tensor<2x5xf32> {
  %y = nn.matmul %x, %w : (tensor<2x4xf32>, tensor<4x3xf32>) -> tensor<2x5xf32>
  func.return %y : tensor<2x5xf32>
}
// CHECK: 'nn.matmul': result shape 2x5 does not match the inferred shape 2x3

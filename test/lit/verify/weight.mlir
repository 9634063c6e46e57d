// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main() -> tensor<?x4xf32> {
  %w = nn.weight "w" : tensor<?x4xf32>
  func.return %w : tensor<?x4xf32>
}
// CHECK: 'nn.weight' "w": weights need a static shape, got tensor<?x4xf32>

// -----
func.func @main() -> tensor<4x4xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 5:4, axis = 1>} : tensor<4x4xf32>
  func.return %w : tensor<4x4xf32>
}
// CHECK: #sparse.pattern: n:m needs m >= 1 and 0 <= n <= m, got 5:4

// -----
func.func @main() -> tensor<4x4xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<block 1, axis = 0>} : tensor<4x4xf32>
  func.return %w : tensor<4x4xf32>
}
// CHECK: #sparse.pattern: block size must be >= 2, got 1

// -----
func.func @main() -> tensor<4x4xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<diagonal>} : tensor<4x4xf32>
  func.return %w : tensor<4x4xf32>
}
// CHECK: unknown sparsity pattern 'diagonal', expected unstructured, block or nm

// -----
func.func @main() -> tensor<4xf32> {
  %w = nn.weight "w" dense<[1.0, 2.0]> : tensor<4xf32>
  func.return %w : tensor<4xf32>
}
// CHECK: Shape mismatch in dense literal

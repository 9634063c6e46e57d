// The three #sparse.pattern forms print and parse.
// RUN: sparsec opt %s | filecheck %s

func.func @main() -> (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>) {
  %a = nn.weight "a" {sparsity = #sparse.pattern<unstructured>} dense<0.0> : tensor<4x4xf32>
  %b = nn.weight "b" {sparsity = #sparse.pattern<block 4, axis = 0>} dense<0.0> : tensor<4x4xf32>
  %c = nn.weight "c" {sparsity = #sparse.pattern<nm 3:4, axis = 1>} dense<0.0> : tensor<4x4xf32>
  func.return %a, %b, %c : tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>
}

// CHECK: #sparse.pattern<unstructured>
// CHECK: #sparse.pattern<block 4, axis = 0>
// CHECK: #sparse.pattern<nm 3:4, axis = 1>

// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%a: tensor<2x3xf32>, %b: tensor<4xf32>) -> tensor<2x3xf32> {
  %y = nn.add %a, %b : (tensor<2x3xf32>, tensor<4xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.add': shapes 2x3, 4 do not broadcast (dimension 1: [3, 4])

// -----
func.func @main(%a: tensor<2x3xf32>, %b: tensor<2x1xf32>) -> tensor<2x3xf32> {
  %y = nn.mul %a, %b : (tensor<2x3xf32>, tensor<2x1xf32>) -> tensor<2x1xf32>
  func.return %a : tensor<2x3xf32>
}
// CHECK: 'nn.mul': result shape 2x1 does not match the inferred shape 2x3

// -----
func.func @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf16>) -> tensor<2x3xf32> {
  %y = nn.sum %a, %b : (tensor<2x3xf32>, tensor<2x3xf16>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.sum': operands must share one element type

// -----
func.func @main(%a: tensor<2x3xi64>) -> tensor<2x3xi64> {
  %y = nn.relu %a : (tensor<2x3xi64>) -> tensor<2x3xi64>
  func.return %y : tensor<2x3xi64>
}
// CHECK: 'nn.relu': operand #0 must be a float tensor, got tensor<2x3xi64>

// -----
func.func @main(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.gelu %a {approximate = "erf"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.gelu': approximate must be "none" or "tanh", got "erf"

// -----
func.func @main(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.softmax %a {axis = 2 : i64} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.softmax': axis 2 is out of range for rank 2

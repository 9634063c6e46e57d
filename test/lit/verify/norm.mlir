// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<1x4x2x2xf32>, %s: tensor<3xf32>) -> tensor<1x4x2x2xf32> {
  %y = nn.batch_norm %x, %s, %s, %s, %s : (tensor<1x4x2x2xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>) -> tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
// CHECK: 'nn.batch_norm': scale must have shape 4 (the channels), got 3

// -----
func.func @main(%x: tensor<2x8xf32>, %s: tensor<4xf32>) -> tensor<2x8xf32> {
  %y = nn.layer_norm %x, %s : (tensor<2x8xf32>, tensor<4xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.layer_norm': scale of shape 4 does not broadcast to the normalized shape 8

// -----
func.func @main(%x: tensor<2x8xf32>, %s: tensor<8xf32>, %b: tensor<3xf32>) -> tensor<2x8xf32> {
  %y = nn.layer_norm %x, %s, %b : (tensor<2x8xf32>, tensor<8xf32>, tensor<3xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.layer_norm': bias of shape 3 does not broadcast to the normalized shape 8

// -----
func.func @main(%x: tensor<2x8xf32>, %s: tensor<4xf32>) -> tensor<2x8xf32> {
  %y = nn.rms_norm %x, %s {epsilon = 1.0e-06 : f32} : (tensor<2x8xf32>, tensor<4xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.rms_norm': scale of shape 4 does not broadcast to the normalized shape 8

// -----
func.func @main(%x: tensor<2x8xi64>) -> tensor<2x8xi64> {
  %y = nn.swish %x : (tensor<2x8xi64>) -> tensor<2x8xi64>
  func.return %y : tensor<2x8xi64>
}
// CHECK: 'nn.swish': operand #0 must be a float tensor, got tensor<2x8xi64>

// -----
func.func @main(%x: tensor<2x8xf32>, %s: tensor<8xf32>) -> tensor<2x8xf32> {
  %y = nn.layer_norm %x, %s {axis = 3 : i64} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.layer_norm': axis 3 is out of range for rank 2

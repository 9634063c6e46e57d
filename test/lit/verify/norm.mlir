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
// CHECK: 'nn.layer_norm': scale and bias of shape 4 do not broadcast to the normalized shape 8

// -----
func.func @main(%x: tensor<2x8xf32>, %s: tensor<8xf32>) -> tensor<2x8xf32> {
  %y = nn.layer_norm %x, %s {axis = 3 : i64} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.layer_norm': axis 3 is out of range for rank 2

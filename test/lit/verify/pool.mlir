// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32> {
  %y = nn.max_pool %x {kernel_shape = array<i64: 2>} : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32>
  func.return %y : tensor<1x4x4x4xf32>
}
// CHECK: 'nn.max_pool': kernel_shape (2,) does not fit input 1x4x8x8

// -----
func.func @main(%x: tensor<1x4x5x5xf32>) -> tensor<1x4x2x2xf32> {
  %y = nn.average_pool %x {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, ceil_mode = 1 : i64} : (tensor<1x4x5x5xf32>) -> tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
// CHECK: 'nn.average_pool': result shape 1x4x2x2 does not match the inferred shape 1x4x3x3

// -----
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = nn.global_average_pool %x : (tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK: 'nn.global_average_pool': input must be (N, C, spatial...), got 4x8

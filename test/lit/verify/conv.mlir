// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x3x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w : (tensor<1x4x8x8xf32>, tensor<6x3x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': input channels 4 != W channels 3 x group 1

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x2x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w {group = 4 : i64} : (tensor<1x4x8x8xf32>, tensor<6x2x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': group 4 must be >= 1 and divide M = 6

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>, %b: tensor<4xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w, %b : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>, tensor<4xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': bias must have shape 6, got 4

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 1>} : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': strides, dilations and pads need 2, 2 and 4 values for 2 spatial dimensions, got 1, 2, 4

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w {auto_pad = "MIDDLE"} : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': auto_pad 'MIDDLE' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID

// -----
func.func @main(%x: tensor<1x4x2x2xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x1x1xf32> {
  %y = nn.conv %x, %w : (tensor<1x4x2x2xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x1x1xf32>
  func.return %y : tensor<1x6x1x1xf32>
}
// CHECK: 'nn.conv': window of size 3 (dilation 1) does not fit spatial size 2 with pads 0, 0

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x8x8xf32> {
  %y = nn.conv %x, %w : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x8x8xf32>
  func.return %y : tensor<1x6x8x8xf32>
}
// CHECK: 'nn.conv': result shape 1x6x8x8 does not match the inferred shape 1x6x6x6

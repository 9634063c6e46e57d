// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<2x6xf32>) -> tensor<5x2xf32> {
  %y = nn.reshape %x {shape = array<i64: 5, -1>} : (tensor<2x6xf32>) -> tensor<5x2xf32>
  func.return %y : tensor<5x2xf32>
}
// CHECK: 'nn.reshape': cannot reshape 2x6 into (5, -1)

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<12xf32> {
  %y = nn.reshape %x {shape = array<i64: -1, -1>} : (tensor<2x6xf32>) -> tensor<12xf32>
  func.return %y : tensor<12xf32>
}
// CHECK: 'nn.reshape': shape (-1, -1) has more than one -1

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<6x2xf32> {
  %y = nn.transpose %x {perm = array<i64: 0, 0>} : (tensor<2x6xf32>) -> tensor<6x2xf32>
  func.return %y : tensor<6x2xf32>
}
// CHECK: 'nn.transpose': perm (0, 0) is not a permutation of 2 axes

// -----
func.func @main(%x: tensor<2x6xf32>, %z: tensor<3x5xf32>) -> tensor<2x11xf32> {
  %y = nn.concat %x, %z {axis = 1 : i64} : (tensor<2x6xf32>, tensor<3x5xf32>) -> tensor<2x11xf32>
  func.return %y : tensor<2x11xf32>
}
// CHECK: 'nn.concat': operands 2x6 and 3x5 differ outside the concatenation axis 1

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<6xf32> {
  %y = nn.squeeze %x {axes = array<i64: 0>} : (tensor<2x6xf32>) -> tensor<6xf32>
  func.return %y : tensor<6xf32>
}
// CHECK: 'nn.squeeze': cannot squeeze axis 0 of size 2

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<2x6x1xf32> {
  %y = nn.unsqueeze %x {axes = array<i64: 5>} : (tensor<2x6xf32>) -> tensor<2x6x1xf32>
  func.return %y : tensor<2x6x1xf32>
}
// CHECK: 'nn.unsqueeze': axes value 5 is out of range for rank 3

// -----
func.func @main(%x: tensor<2x3x4xf32>) -> tensor<2x12xf32> {
  %y = nn.flatten %x {axis = 4 : i64} : (tensor<2x3x4xf32>) -> tensor<2x12xf32>
  func.return %y : tensor<2x12xf32>
}
// CHECK: 'nn.flatten': axis 4 is out of range for rank 3

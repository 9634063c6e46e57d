// The remaining verifier errors, one per chunk.
// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: f32) -> tensor<2xf32> {
  %y = nn.relu %x : (f32) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK: f32 should be of base attribute tensor

// -----
func.func @main(%x: tensor<2x3x4xf32>, %w: tensor<5x4x6xf32>) -> tensor<5x3x6xf32> {
  %y = nn.matmul %x, %w : (tensor<2x3x4xf32>, tensor<5x4x6xf32>) -> tensor<5x3x6xf32>
  func.return %y : tensor<5x3x6xf32>
}
// CHECK: 'nn.matmul': shapes 2, 5 do not broadcast (dimension 0: [2, 5])

// -----
func.func @main(%x: tensor<f32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %y = nn.matmul %x, %w : (tensor<f32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: 'nn.matmul': operands must have rank >= 1

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w : (tensor<1x4x8x8xf32>, tensor<6x4x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': X must be (N, C, spatial...) and W (M, C/group, kernel...) of the same rank, got 1x4x8x8 and 6x4x3

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w {kernel_shape = array<i64: 5, 5>} : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': kernel_shape (5, 5) != W's (3, 3)

// -----
func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 0, 1>} : (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x6x6xf32>
  func.return %y : tensor<1x6x6x6xf32>
}
// CHECK: 'nn.conv': strides and dilations must be >= 1 and pads >= 0

// -----
func.func @main(%x: tensor<1x4x?x8xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x?x8xf32> {
  %y = nn.conv %x, %w {auto_pad = "SAME_UPPER"} : (tensor<1x4x?x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x?x8xf32>
  func.return %y : tensor<1x6x?x8xf32>
}
// CHECK: 'nn.conv': auto_pad SAME_UPPER needs static spatial sizes

// -----
func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = nn.batch_norm %x, %x, %x, %x, %x : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK: 'nn.batch_norm': input must be (N, C, ...), got 4

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<2x6x1xf32> {
  %y = nn.reshape %x {shape = array<i64: 0, 0, 0>} : (tensor<2x6xf32>) -> tensor<2x6x1xf32>
  func.return %y : tensor<2x6x1xf32>
}
// CHECK: 'nn.reshape': shape (0, 0, 0): 0 at index 2 has no input dimension to copy

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<2x12xf32> {
  %y = nn.concat %x, %x {axis = 2 : i64} : (tensor<2x6xf32>, tensor<2x6xf32>) -> tensor<2x12xf32>
  func.return %y : tensor<2x12xf32>
}
// CHECK: 'nn.concat': axis 2 is out of range for rank 2

// -----
func.func @main(%x: tensor<2x6xf32>) -> tensor<1x1x2x6xf32> {
  %y = nn.unsqueeze %x {axes = array<i64: 0, -4>} : (tensor<2x6xf32>) -> tensor<1x1x2x6xf32>
  func.return %y : tensor<1x1x2x6xf32>
}
// CHECK: 'nn.unsqueeze': axes (0, -4) repeat an axis

// -----
func.func @main(%x: tensor<2x1xf32>) -> tensor<2xf32> {
  %y = nn.squeeze %x {axes = array<i64: 3>} : (tensor<2x1xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK: 'nn.squeeze': axes value 3 is out of range for rank 2

// -----
func.func @main() -> tensor<4x4xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 1.5>} : tensor<4x4xf32>
  func.return %w : tensor<4x4xf32>
}
// CHECK: #sparse.pattern: sparsity must be in [0, 1], got 1.5

// -----
func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.lrn %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: property 'size' expected in operation 'nn.lrn'

// -----
func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.lrn %x {size = 0 : i64} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: 'nn.lrn': size must be at least 1 (channels summed over), got 0

// -----
func.func @main(%x: tensor<2x7xf32>, %c: tensor<2x7xf32>) -> tensor<2x7xf32> {
  %y = nn.rotary_embedding %x, %c, %c : (tensor<2x7xf32>, tensor<2x7xf32>, tensor<2x7xf32>) -> tensor<2x7xf32>
  func.return %y : tensor<2x7xf32>
}
// CHECK: 'nn.rotary_embedding': x's last dimension must be static and even, got 2x7

// -----
func.func @main(%x: tensor<2x8xf32>, %c: tensor<3x8xf32>) -> tensor<2x8xf32> {
  %y = nn.rotary_embedding %x, %c, %c : (tensor<2x8xf32>, tensor<3x8xf32>, tensor<3x8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK: 'nn.rotary_embedding': shapes 2x8, 3x8, 3x8 do not broadcast

// -----
func.func @main(%q: tensor<2x3x4xf32>, %kt: tensor<1x2x4x3xf32>, %v: tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32> {
  %y = nn.attention %q, %kt, %v : (tensor<2x3x4xf32>, tensor<1x2x4x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  func.return %y : tensor<1x2x3x4xf32>
}
// CHECK: 'nn.attention': q, kt and v must have rank 4, got 2x3x4, 1x2x4x3 and 1x2x3x4

// -----
func.func @main(%q: tensor<1x2x3x4xf32>, %kt: tensor<1x2x5x3xf32>, %v: tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32> {
  %y = nn.attention %q, %kt, %v : (tensor<1x2x3x4xf32>, tensor<1x2x5x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  func.return %y : tensor<1x2x3x4xf32>
}
// CHECK: 'nn.attention': q 1x2x3x4, kt 1x2x5x3 and v 1x2x3x4 do not chain: q's width must be kt's rows, kt's columns v's rows

// -----
func.func @main(%q: tensor<1x4x3x4xf32>, %kt: tensor<1x3x4x3xf32>, %v: tensor<1x1x3x4xf32>) -> tensor<1x4x3x4xf32> {
  %y = nn.attention %q, %kt, %v : (tensor<1x4x3x4xf32>, tensor<1x3x4x3xf32>, tensor<1x1x3x4xf32>) -> tensor<1x4x3x4xf32>
  func.return %y : tensor<1x4x3x4xf32>
}
// CHECK: 'nn.attention': kt's 3 heads do not divide q's 4

// -----
func.func @main(%q: tensor<1x2x3x4xf32>, %kt: tensor<1x2x4x3xf32>, %v: tensor<1x2x3x4xf32>, %m: tensor<1x1x2x3xf32>) -> tensor<1x2x3x4xf32> {
  %y = nn.attention %q, %kt, %v, %m : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>, tensor<1x2x3x4xf32>, tensor<1x1x2x3xf32>) -> tensor<1x2x3x4xf32>
  func.return %y : tensor<1x2x3x4xf32>
}
// CHECK: 'nn.attention': shapes 1x1x2x3, 1x2x3x3 do not broadcast (dimension 2: [2, 3])

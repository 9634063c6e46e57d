// fuse-layer-norm: layer normalization written out op by op, as PyTorch exports
// nn.LayerNorm before opset 17, becomes one nn.layer_norm; the constants it read leave
// the module.
// RUN: sparsec opt %s --split-input-file -p fuse-layer-norm | filecheck %s
// RUN: not sparsec opt %s -p 'fuse-layer-norm{axis=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-layer-norm' has no option 'axis' (options: none)

// PyTorch's export of nn.LayerNorm(8) at opset 14.
func.func @main(%x: tensor<?x?x8xf32>) -> tensor<?x?x8xf32> {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %eps = nn.weight "eps" dense<9.99999996e-13> : tensor<f32>
  %gamma = nn.weight "gamma" dense<[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]> : tensor<8xf32>
  %beta = nn.weight "beta" dense<0.5> : tensor<8xf32>
  %m = nn.reduce_mean %x {axes = array<i64: -1>} : (tensor<?x?x8xf32>) -> tensor<?x?x1xf32>
  %d = nn.sub %x, %m : (tensor<?x?x8xf32>, tensor<?x?x1xf32>) -> tensor<?x?x8xf32>
  %p = nn.pow %d, %two : (tensor<?x?x8xf32>, tensor<f32>) -> tensor<?x?x8xf32>
  %v = nn.reduce_mean %p {axes = array<i64: -1>} : (tensor<?x?x8xf32>) -> tensor<?x?x1xf32>
  %e = nn.add %v, %eps : (tensor<?x?x1xf32>, tensor<f32>) -> tensor<?x?x1xf32>
  %s = nn.sqrt %e : (tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
  %n = nn.div %d, %s : (tensor<?x?x8xf32>, tensor<?x?x1xf32>) -> tensor<?x?x8xf32>
  %g = nn.mul %n, %gamma : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %y = nn.add %g, %beta : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  func.return %y : tensor<?x?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x?x8xf32>) -> tensor<?x?x8xf32> {
// CHECK-NEXT:   %gamma = nn.weight "gamma" dense<[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]> : tensor<8xf32>
// CHECK-NEXT:   %beta = nn.weight "beta" dense<0.5> : tensor<8xf32>
// CHECK-NEXT:   %y = nn.layer_norm %x, %gamma, %beta {epsilon = 1.000000e-12 : f32} : (tensor<?x?x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT:   func.return %y : tensor<?x?x8xf32>
// CHECK-NEXT: }

// -----
// No gamma or beta (elementwise_affine=False), epsilon (1e-5, the default, so not
// printed) first in its Add, the axis written as 1 of rank 2: a weight of ones takes
// gamma's place.
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %two = nn.weight "two" dense<2.0> : tensor<1xf32>
  %eps = nn.weight "eps" dense<1.0e-05> : tensor<f32>
  %m = nn.reduce_mean %x {axes = array<i64: 1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %d = nn.sub %x, %m : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p = nn.pow %d, %two : (tensor<4x8xf32>, tensor<1xf32>) -> tensor<4x8xf32>
  %v = nn.reduce_mean %p {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e = nn.add %eps, %v : (tensor<f32>, tensor<4x1xf32>) -> tensor<4x1xf32>
  %s = nn.sqrt %e : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y = nn.div %d, %s : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK:      func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
// CHECK-NEXT:   %layer_norm_scale = nn.weight "layer_norm_scale" dense<1.0> : tensor<8xf32>
// CHECK-NEXT:   %y = nn.layer_norm %x, %layer_norm_scale : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:   func.return %y : tensor<4x8xf32>

// -----
// A scale of another shape than one per channel is not gamma: it stays a Mul after
// the fused normalization.
func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %eps = nn.weight "eps" dense<1.0e-05> : tensor<f32>
  %k = nn.weight "k" dense<3.0> : tensor<4x8xf32>
  %m = nn.reduce_mean %x {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %d = nn.sub %x, %m : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p = nn.pow %d, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %v = nn.reduce_mean %p {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e = nn.add %v, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s = nn.sqrt %e : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %n = nn.div %d, %s : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %y = nn.mul %n, %k : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK:      %n = nn.layer_norm %x, %layer_norm_scale :
// CHECK-NEXT: %y = nn.mul %n, %k

// -----
// Left alone: a cube rather than a square; a mean over the first axis; a square root
// read twice.
func.func @main(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>) {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %three = nn.weight "three" dense<3.0> : tensor<f32>
  %eps = nn.weight "eps" dense<1.0e-05> : tensor<f32>
  %m1 = nn.reduce_mean %x {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %d1 = nn.sub %x, %m1 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p1 = nn.pow %d1, %three : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %v1 = nn.reduce_mean %p1 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e1 = nn.add %v1, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s1 = nn.sqrt %e1 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y1 = nn.div %d1, %s1 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %m2 = nn.reduce_mean %x {axes = array<i64: 0>} : (tensor<4x8xf32>) -> tensor<1x8xf32>
  %d2 = nn.sub %x, %m2 : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  %p2 = nn.pow %d2, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %v2 = nn.reduce_mean %p2 {axes = array<i64: 0>} : (tensor<4x8xf32>) -> tensor<1x8xf32>
  %e2 = nn.add %v2, %eps : (tensor<1x8xf32>, tensor<f32>) -> tensor<1x8xf32>
  %s2 = nn.sqrt %e2 : (tensor<1x8xf32>) -> tensor<1x8xf32>
  %y2 = nn.div %d2, %s2 : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  %m3 = nn.reduce_mean %x {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %d3 = nn.sub %x, %m3 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p3 = nn.pow %d3, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %v3 = nn.reduce_mean %p3 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e3 = nn.add %v3, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s3 = nn.sqrt %e3 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y3 = nn.div %d3, %s3 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y1, %y2, %y3, %s3 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.layer_norm
// CHECK:     %y1 = nn.div %d1, %s1
// CHECK:     %y2 = nn.div %d2, %s2
// CHECK:     %y3 = nn.div %d3, %s3
// CHECK-NOT: nn.layer_norm

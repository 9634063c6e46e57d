// fuse-rms-norm: RMS normalization written out op by op, as PyTorch exports LLaMA's
// RMSNorm before opset 23, becomes one nn.rms_norm; the constants it read leave the
// module.
// RUN: sparsec opt %s --split-input-file -p fuse-rms-norm | filecheck %s
// RUN: not sparsec opt %s -p 'fuse-rms-norm{epsilon=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-rms-norm' has no option 'epsilon' (options: none)

// The TorchScript exporter's LlamaRMSNorm(8) at opset 17 (its Casts to float32 gone
// with strip-identity): 1 / sqrt as a Div, gamma first in its Mul.
func.func @main(%x: tensor<?x?x8xf32>) -> tensor<?x?x8xf32> {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %eps = nn.weight "eps" dense<9.99999997e-07> : tensor<f32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %gamma = nn.weight "gamma" dense<[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]> : tensor<8xf32>
  %p = nn.pow %x, %two : (tensor<?x?x8xf32>, tensor<f32>) -> tensor<?x?x8xf32>
  %m = nn.reduce_mean %p {axes = array<i64: -1>} : (tensor<?x?x8xf32>) -> tensor<?x?x1xf32>
  %e = nn.add %m, %eps : (tensor<?x?x1xf32>, tensor<f32>) -> tensor<?x?x1xf32>
  %s = nn.sqrt %e : (tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
  %r = nn.div %one, %s : (tensor<f32>, tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
  %n = nn.mul %x, %r : (tensor<?x?x8xf32>, tensor<?x?x1xf32>) -> tensor<?x?x8xf32>
  %y = nn.mul %gamma, %n : (tensor<8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %z = nn.add %x, %y : (tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  func.return %z : tensor<?x?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x?x8xf32>) -> tensor<?x?x8xf32> {
// CHECK-NEXT:   %gamma = nn.weight "gamma" dense<[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]> : tensor<8xf32>
// CHECK-NEXT:   %y = nn.rms_norm %x, %gamma {epsilon = 1.000000e-06 : f32} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
// CHECK-NEXT:   %z = nn.add %x, %y
// CHECK-NEXT:   func.return %z : tensor<?x?x8xf32>
// CHECK-NEXT: }

// -----
// The dynamo exporter's: Reciprocal, the product's operands the other way round.
func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %eps = nn.weight "eps" dense<1.0e-05> : tensor<f32>
  %gamma = nn.weight "gamma" dense<0.5> : tensor<8xf32>
  %p = nn.pow %x, %two : (tensor<2x8xf32>, tensor<f32>) -> tensor<2x8xf32>
  %m = nn.reduce_mean %p {axes = array<i64: 1>} : (tensor<2x8xf32>) -> tensor<2x1xf32>
  %e = nn.add %eps, %m : (tensor<f32>, tensor<2x1xf32>) -> tensor<2x1xf32>
  %s = nn.sqrt %e : (tensor<2x1xf32>) -> tensor<2x1xf32>
  %r = nn.reciprocal %s : (tensor<2x1xf32>) -> tensor<2x1xf32>
  %n = nn.mul %r, %x : (tensor<2x1xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y = nn.mul %n, %gamma : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK:      func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
// CHECK-NEXT:   %gamma = nn.weight "gamma" dense<0.5> : tensor<8xf32>
// CHECK-NEXT:   %y = nn.rms_norm %x, %gamma : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   func.return %y : tensor<2x8xf32>

// -----
// x times itself, divided by the root, without gamma: a weight of ones takes its
// place. A scale of another shape than one per channel stays a Mul after the norm.
func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %eps = nn.weight "eps" dense<1.0e-06> : tensor<f32>
  %k = nn.weight "k" dense<3.0> : tensor<2x8xf32>
  %p = nn.mul %x, %x : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %m = nn.reduce_mean %p {axes = array<i64: -1>} : (tensor<2x8xf32>) -> tensor<2x1xf32>
  %e = nn.add %m, %eps : (tensor<2x1xf32>, tensor<f32>) -> tensor<2x1xf32>
  %s = nn.sqrt %e : (tensor<2x1xf32>) -> tensor<2x1xf32>
  %n = nn.div %x, %s : (tensor<2x8xf32>, tensor<2x1xf32>) -> tensor<2x8xf32>
  %y = nn.mul %n, %k : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK:      func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
// CHECK-NEXT:   %k = nn.weight "k" dense<3.0> : tensor<2x8xf32>
// CHECK-NEXT:   %rms_norm_scale = nn.weight "rms_norm_scale" dense<1.0> : tensor<8xf32>
// CHECK-NEXT:   %n = nn.rms_norm %x, %rms_norm_scale {epsilon = 1.000000e-06 : f32} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   %y = nn.mul %n, %k

// -----
// Left alone: a cube rather than a square; a mean over the first axis; a product with
// another tensor than x; a square root read twice; and a layer normalization's second
// half (the deviations from the mean: fuse-layer-norm's).
func.func @main(%x: tensor<4x8xf32>, %w: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>, tensor<4x8xf32>) {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %three = nn.weight "three" dense<3.0> : tensor<f32>
  %eps = nn.weight "eps" dense<1.0e-05> : tensor<f32>
  %p1 = nn.pow %x, %three : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %m1 = nn.reduce_mean %p1 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e1 = nn.add %m1, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s1 = nn.sqrt %e1 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y1 = nn.div %x, %s1 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p2 = nn.pow %x, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %m2 = nn.reduce_mean %p2 {axes = array<i64: 0>} : (tensor<4x8xf32>) -> tensor<1x8xf32>
  %e2 = nn.add %m2, %eps : (tensor<1x8xf32>, tensor<f32>) -> tensor<1x8xf32>
  %s2 = nn.sqrt %e2 : (tensor<1x8xf32>) -> tensor<1x8xf32>
  %y2 = nn.div %x, %s2 : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  %p3 = nn.pow %x, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %m3 = nn.reduce_mean %p3 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e3 = nn.add %m3, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s3 = nn.sqrt %e3 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y3 = nn.div %w, %s3 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p4 = nn.pow %x, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %m4 = nn.reduce_mean %p4 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e4 = nn.add %m4, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s4 = nn.sqrt %e4 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y4 = nn.div %x, %s4 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %c = nn.reduce_mean %x {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %d = nn.sub %x, %c : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %p5 = nn.pow %d, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %m5 = nn.reduce_mean %p5 {axes = array<i64: -1>} : (tensor<4x8xf32>) -> tensor<4x1xf32>
  %e5 = nn.add %m5, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %s5 = nn.sqrt %e5 : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y5 = nn.div %d, %s5 : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y1, %y2, %y3, %y4, %s4, %y5 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>, tensor<4x8xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.rms_norm
// CHECK:     %y1 = nn.div %x, %s1
// CHECK:     %y2 = nn.div %x, %s2
// CHECK:     %y3 = nn.div %w, %s3
// CHECK:     %y4 = nn.div %x, %s4
// CHECK:     %y5 = nn.div %d, %s5
// CHECK-NOT: nn.rms_norm

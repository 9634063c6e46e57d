// fold-batch-norm: per output channel, inv = scale / sqrt(var + epsilon),
// w' = w * inv and b' = (b - mean) * inv + shift; the old weights leave the store.
// RUN: sparsec opt %s --split-input-file -p fold-batch-norm | filecheck %s
// RUN: not sparsec opt %s -p 'fold-batch-norm{axis=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fold-batch-norm' has no option 'axis' (options: none)

// Channel 0: inv = 2 / sqrt(3 + 1) = 1, bias (1 - 1) * 1 + 0.25; channel 1: inv = 0.5 / sqrt(0 + 1), bias (-1 - 3) * 0.5 + 1.
func.func @main(%x: tensor<?x2x3x3xf32>) -> tensor<?x2x2x2xf32> {
  %w = nn.weight "w" dense<[[[[1.0, 2.0], [0.0, -1.0]], [[0.5, 0.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 2.0]], [[-1.0, 1.0], [0.0, 4.0]]]]> : tensor<2x2x2x2xf32>
  %b = nn.weight "b" dense<[1.0, -1.0]> : tensor<2xf32>
  %s = nn.weight "s" dense<[2.0, 0.5]> : tensor<2xf32>
  %t = nn.weight "t" dense<[0.25, 1.0]> : tensor<2xf32>
  %m = nn.weight "m" dense<[1.0, 3.0]> : tensor<2xf32>
  %v = nn.weight "v" dense<[3.0, 0.0]> : tensor<2xf32>
  %y = nn.conv %x, %w, %b : (tensor<?x2x3x3xf32>, tensor<2x2x2x2xf32>, tensor<2xf32>) -> tensor<?x2x2x2xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v {epsilon = 1.0 : f32} : (tensor<?x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<?x2x2x2xf32>
  %r = nn.relu %z : (tensor<?x2x2x2xf32>) -> tensor<?x2x2x2xf32>
  func.return %r : tensor<?x2x2x2xf32>
}
// CHECK:      func.func @main
// CHECK-NEXT:   %w_bn = nn.weight "w_bn" dense<{{\[\[\[\[}}1.0, 2.0], [0.0, -1.0]], {{\[\[}}0.5, 0.0], [1.0, 1.0]]], {{\[\[\[}}1.0, 0.0], [0.0, 1.0]], {{\[\[}}-0.5, 0.5], [0.0, 2.0]]]]> : tensor<2x2x2x2xf32>
// CHECK-NEXT:   %w_bn_bias = nn.weight "w_bn_bias" dense<[0.25, -1.0]> : tensor<2xf32>
// CHECK-NEXT:   %z = nn.conv %x, %w_bn, %w_bn_bias : (tensor<?x2x3x3xf32>, tensor<2x2x2x2xf32>, tensor<2xf32>) -> tensor<?x2x2x2xf32>
// CHECK-NEXT:   %r = nn.relu %z
// CHECK-NOT:    nn.batch_norm

// -----
// Without a bias the folded bias is shift - mean * inv; strides and pads stay. A pruned
// weight keeps its zeros and its pattern attribute.
func.func @main(%x: tensor<?x1x4x4xf32>) -> tensor<?x2x2x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[[[0.0, 4.0], [-2.0, 0.0]]], [[[1.0, 0.0], [0.0, 3.0]]]]> : tensor<2x1x2x2xf32>
  %s = nn.weight "s" dense<[0.5, 1.0]> : tensor<2xf32>
  %t = nn.weight "t" dense<[0.0, 2.0]> : tensor<2xf32>
  %m = nn.weight "m" dense<[4.0, 1.0]> : tensor<2xf32>
  %v = nn.weight "v" dense<[1.0, 1.0]> : tensor<2xf32>
  %y = nn.conv %x, %w {strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>} : (tensor<?x1x4x4xf32>, tensor<2x1x2x2xf32>) -> tensor<?x2x2x2xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v {epsilon = 0.0 : f32} : (tensor<?x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<?x2x2x2xf32>
  func.return %z : tensor<?x2x2x2xf32>
}
// CHECK:      %w_bn = nn.weight "w_bn" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[\[\[}}0.0, 2.0], [-1.0, 0.0]]], {{\[\[\[}}1.0, 0.0], [0.0, 3.0]]]]> : tensor<2x1x2x2xf32>
// CHECK-NEXT: %w_bn_bias = nn.weight "w_bn_bias" dense<[-2.0, 1.0]> : tensor<2xf32>
// CHECK-NEXT: %z = nn.conv %x, %w_bn, %w_bn_bias {strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>}

// -----
// Not folded: the convolution's result has another use, or the normalization's scale
// is computed.
func.func @main(%x: tensor<?x1x2x2xf32>) -> (tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>) {
  %w = nn.weight "w" dense<1.0> : tensor<1x1x2x2xf32>
  %s = nn.weight "s" dense<2.0> : tensor<1xf32>
  %t = nn.weight "t" dense<0.0> : tensor<1xf32>
  %m = nn.weight "m" dense<0.0> : tensor<1xf32>
  %v = nn.weight "v" dense<1.0> : tensor<1xf32>
  %y = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<1x1x2x2xf32>) -> tensor<?x1x1x1xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v : (tensor<?x1x1x1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<?x1x1x1xf32>
  %y2 = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<1x1x2x2xf32>) -> tensor<?x1x1x1xf32>
  %s2 = nn.add %s, %s : (tensor<1xf32>, tensor<1xf32>) -> tensor<1xf32>
  %z2 = nn.batch_norm %y2, %s2, %t, %m, %v : (tensor<?x1x1x1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<?x1x1x1xf32>
  func.return %y, %z, %z2, %z2 : tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>
}
// CHECK:     %y = nn.conv %x, %w :
// CHECK:     %z = nn.batch_norm %y, %s, %t, %m, %v
// CHECK:     %y2 = nn.conv %x, %w :
// CHECK:     %z2 = nn.batch_norm %y2, %s2, %t, %m, %v
// CHECK-NOT: _bn
// CHECK:     func.return %y, %z, %z2, %z2

// -----
// One weight under two convolutions, each with its own normalization: two folded
// copies under new names; the shared weight leaves the store.
func.func @main(%x: tensor<?x1x1x1xf32>) -> (tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>) {
  %w = nn.weight "w" dense<3.0> : tensor<1x1x1x1xf32>
  %s = nn.weight "s" dense<2.0> : tensor<1xf32>
  %s3 = nn.weight "s3" dense<3.0> : tensor<1xf32>
  %t = nn.weight "t" dense<0.0> : tensor<1xf32>
  %m = nn.weight "m" dense<0.0> : tensor<1xf32>
  %v = nn.weight "v" dense<1.0> : tensor<1xf32>
  %y = nn.conv %x, %w : (tensor<?x1x1x1xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x1x1xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v {epsilon = 0.0 : f32} : (tensor<?x1x1x1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<?x1x1x1xf32>
  %y2 = nn.conv %x, %w : (tensor<?x1x1x1xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x1x1xf32>
  %z2 = nn.batch_norm %y2, %s3, %t, %m, %v {epsilon = 0.0 : f32} : (tensor<?x1x1x1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<?x1x1x1xf32>
  func.return %z, %z2 : tensor<?x1x1x1xf32>, tensor<?x1x1x1xf32>
}
// CHECK:      %w_bn = nn.weight "w_bn" dense<{{\[\[\[\[}}6.0]]]]> : tensor<1x1x1x1xf32>
// CHECK:      %w_bn_1 = nn.weight "w_bn_1" dense<{{\[\[\[\[}}9.0]]]]> : tensor<1x1x1x1xf32>
// CHECK-NOT:  "w"

// -----
// Gemm, B as (N, K) (trans_b = 1): B's rows scale; C and beta fold into a bias with
// beta = 1. inv = [2, 0.5]; bias = 3 * [1, 2] * inv + [0, 1] - [1, 2] * inv = [4, 3].
func.func @main(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0], [4.0, 0.0]]> : tensor<2x2xf32>
  %c = nn.weight "c" dense<[1.0, 2.0]> : tensor<2xf32>
  %s = nn.weight "s" dense<[2.0, 0.5]> : tensor<2xf32>
  %t = nn.weight "t" dense<[0.0, 1.0]> : tensor<2xf32>
  %m = nn.weight "m" dense<[1.0, 2.0]> : tensor<2xf32>
  %v = nn.weight "v" dense<[1.0, 1.0]> : tensor<2xf32>
  %y = nn.gemm %x, %w, %c {trans_b = 1 : i64, beta = 3.0 : f32} : (tensor<?x2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v {epsilon = 0.0 : f32} : (tensor<?x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  func.return %z : tensor<?x2xf32>
}
// CHECK:      %w_bn = nn.weight "w_bn" dense<{{\[\[}}2.0, 4.0], [2.0, 0.0]]> : tensor<2x2xf32>
// CHECK-NEXT: %w_bn_bias = nn.weight "w_bn_bias" dense<[4.0, 3.0]> : tensor<2xf32>
// CHECK-NEXT: %z = nn.gemm %x, %w_bn, %w_bn_bias {trans_b = 1 : i64} :

// -----
// Gemm, B as (K, N), no C: B's columns scale; the bias is shift - mean * inv.
func.func @main(%x: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0], [4.0, 0.0]]> : tensor<2x2xf32>
  %s = nn.weight "s" dense<[2.0, 0.5]> : tensor<2xf32>
  %t = nn.weight "t" dense<[0.0, 1.0]> : tensor<2xf32>
  %m = nn.weight "m" dense<[1.0, 2.0]> : tensor<2xf32>
  %v = nn.weight "v" dense<[1.0, 1.0]> : tensor<2xf32>
  %y = nn.gemm %x, %w : (tensor<?x2xf32>, tensor<2x2xf32>) -> tensor<?x2xf32>
  %z = nn.batch_norm %y, %s, %t, %m, %v {epsilon = 0.0 : f32} : (tensor<?x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  func.return %z : tensor<?x2xf32>
}
// CHECK:      %w_bn = nn.weight "w_bn" dense<{{\[\[}}2.0, 1.0], [8.0, 0.0]]> : tensor<2x2xf32>
// CHECK-NEXT: %w_bn_bias = nn.weight "w_bn_bias" dense<[-2.0, 0.0]> : tensor<2xf32>
// CHECK-NEXT: %z = nn.gemm %x, %w_bn, %w_bn_bias :

// -----
// A Mul and an Add of per-channel constants (exported normalizations; an nn.unsqueeze
// of a weight, or one value) fold into the convolution before them, one after the
// other: w * m per output channel, then the bias b * m + a (here 0 * m + a). The Relu
// stays for lower-kernels to fuse; the constants and their views go.
func.func @main(%x: tensor<?x1x2x2xf32>) -> tensor<?x2x1x1xf32> {
  %w = nn.weight "w" dense<[[[[1.0, 0.0], [0.0, 1.0]]], [[[2.0, 2.0], [0.0, 0.0]]]]> : tensor<2x1x2x2xf32>
  %m = nn.weight "m" dense<[3.0, -1.0]> : tensor<2xf32>
  %a = nn.weight "a" dense<0.5> : tensor<1xf32>
  %m3 = nn.unsqueeze %m {axes = array<i64: 1, 2>} : (tensor<2xf32>) -> tensor<2x1x1xf32>
  %y = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<2x1x2x2xf32>) -> tensor<?x2x1x1xf32>
  %s = nn.mul %y, %m3 : (tensor<?x2x1x1xf32>, tensor<2x1x1xf32>) -> tensor<?x2x1x1xf32>
  %t = nn.add %a, %s : (tensor<1xf32>, tensor<?x2x1x1xf32>) -> tensor<?x2x1x1xf32>
  %r = nn.relu %t : (tensor<?x2x1x1xf32>) -> tensor<?x2x1x1xf32>
  func.return %r : tensor<?x2x1x1xf32>
}
// CHECK:      func.func @main
// CHECK-NEXT:   %w_scaled = nn.weight "w_scaled" dense<{{\[\[\[\[}}3.0, 0.0], [0.0, 3.0]]], {{\[\[\[}}-2.0, -2.0], [-0.0, -0.0]]]]> : tensor<2x1x2x2xf32>
// CHECK-NEXT:   %w_scaled_shifted_bias = nn.weight "w_scaled_shifted_bias" dense<0.5> : tensor<2xf32>
// CHECK-NEXT:   %t = nn.conv %x, %w_scaled, %w_scaled_shifted_bias : (tensor<?x1x2x2xf32>, tensor<2x1x2x2xf32>, tensor<2xf32>) -> tensor<?x2x1x1xf32>
// CHECK-NEXT:   %r = nn.relu %t
// CHECK-NEXT:   func.return %r

// -----
// Into a normalization that does not follow a convolution: its scale times m, its
// shift times m plus a.
func.func @main(%x: tensor<?x2x3x3xf32>) -> tensor<?x2x3x3xf32> {
  %s = nn.weight "s" dense<[2.0, 4.0]> : tensor<2xf32>
  %t = nn.weight "t" dense<[1.0, -1.0]> : tensor<2xf32>
  %mean = nn.weight "mean" dense<0.0> : tensor<2xf32>
  %var = nn.weight "var" dense<1.0> : tensor<2xf32>
  %m = nn.weight "m" dense<[[[[0.5]], [[2.0]]]]> : tensor<1x2x1x1xf32>
  %a = nn.weight "a" dense<[[[1.0]], [[0.0]]]> : tensor<2x1x1xf32>
  %r = nn.relu %x : (tensor<?x2x3x3xf32>) -> tensor<?x2x3x3xf32>
  %n = nn.batch_norm %r, %s, %t, %mean, %var : (tensor<?x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<?x2x3x3xf32>
  %p = nn.mul %n, %m : (tensor<?x2x3x3xf32>, tensor<1x2x1x1xf32>) -> tensor<?x2x3x3xf32>
  %q = nn.add %p, %a : (tensor<?x2x3x3xf32>, tensor<2x1x1xf32>) -> tensor<?x2x3x3xf32>
  func.return %q : tensor<?x2x3x3xf32>
}
// CHECK:      %s_scaled = nn.weight "s_scaled" dense<[1.0, 8.0]> : tensor<2xf32>
// CHECK:      %t_shifted_shifted = nn.weight "t_shifted_shifted" dense<[1.5, -2.0]> : tensor<2xf32>
// CHECK-NEXT: %q = nn.batch_norm %r, %s_scaled, %t_shifted_shifted, %mean, %var
// CHECK-NEXT: func.return %q

// -----
// Not folded: a constant that varies along a spatial axis, a convolution result with
// another use, an Add of a computed value.
func.func @main(%x: tensor<?x1x2x2xf32>) -> (tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>) {
  %w = nn.weight "w" dense<1.0> : tensor<1x1x1x1xf32>
  %k = nn.weight "k" dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32>
  %y = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x2x2xf32>
  %p = nn.mul %y, %k : (tensor<?x1x2x2xf32>, tensor<2x2xf32>) -> tensor<?x1x2x2xf32>
  %y2 = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x2x2xf32>
  %q = nn.mul %y2, %w : (tensor<?x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x2x2xf32>
  %y3 = nn.conv %x, %w : (tensor<?x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<?x1x2x2xf32>
  %s = nn.add %y3, %x : (tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>) -> tensor<?x1x2x2xf32>
  func.return %p, %q, %y2, %s : tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>, tensor<?x1x2x2xf32>
}
// CHECK:      %p = nn.mul %y, %k
// CHECK:      %q = nn.mul %y2, %w
// CHECK:      %s = nn.add %y3, %x

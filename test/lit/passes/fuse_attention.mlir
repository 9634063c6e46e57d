// fuse-attention: attention written out, softmax(q @ kt [* or / a constant] [+ mask [+ mask]])
// @ v over the last axis, becomes one nn.attention; look-alikes stay.
// RUN: sparsec opt %s --split-input-file -p fuse-attention | filecheck %s
// RUN: not sparsec opt %s -p 'fuse-attention{causal=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-attention' has no option 'causal' (options: none)

// BERT's: the scores divided by sqrt(width), the padding mask added; the divisor leaves.
func.func @main(%q: tensor<?x2x?x4xf32>, %kt: tensor<?x2x4x?xf32>, %v: tensor<?x2x?x4xf32>, %mask: tensor<?x1x1x?xf32>) -> tensor<?x2x?x4xf32> {
  %c = nn.weight "c" dense<2.0> : tensor<f32>
  %s = nn.matmul %q, %kt : (tensor<?x2x?x4xf32>, tensor<?x2x4x?xf32>) -> tensor<?x2x?x?xf32>
  %d = nn.div %s, %c : (tensor<?x2x?x?xf32>, tensor<f32>) -> tensor<?x2x?x?xf32>
  %m = nn.add %d, %mask : (tensor<?x2x?x?xf32>, tensor<?x1x1x?xf32>) -> tensor<?x2x?x?xf32>
  %p = nn.softmax %m {axis = -1 : i64} : (tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %y = nn.matmul %p, %v : (tensor<?x2x?x?xf32>, tensor<?x2x?x4xf32>) -> tensor<?x2x?x4xf32>
  func.return %y : tensor<?x2x?x4xf32>
}
// CHECK:      func.func @main(
// CHECK-NEXT:   %y = nn.attention %q, %kt, %v, %mask {scale = 5.000000e-01 : f32} : (tensor<?x2x?x4xf32>, tensor<?x2x4x?xf32>, tensor<?x2x?x4xf32>, tensor<?x1x1x?xf32>) -> tensor<?x2x?x4xf32>
// CHECK-NEXT:   func.return %y
// CHECK-NOT:  nn.weight

// -----
// LLaMA's after fold-scale: no scale, the mask first in the Add, keys of one head
// broadcast, the Softmax's axis written as 3.
func.func @main(%q: tensor<1x4x3x8xf32>, %kt: tensor<1x1x8x5xf32>, %v: tensor<1x1x5x8xf32>, %mask: tensor<1x1x3x5xf32>) -> tensor<1x4x3x8xf32> {
  %s = nn.matmul %q, %kt : (tensor<1x4x3x8xf32>, tensor<1x1x8x5xf32>) -> tensor<1x4x3x5xf32>
  %m = nn.add %mask, %s : (tensor<1x1x3x5xf32>, tensor<1x4x3x5xf32>) -> tensor<1x4x3x5xf32>
  %p = nn.softmax %m {axis = 3 : i64} : (tensor<1x4x3x5xf32>) -> tensor<1x4x3x5xf32>
  %y = nn.matmul %p, %v : (tensor<1x4x3x5xf32>, tensor<1x1x5x8xf32>) -> tensor<1x4x3x8xf32>
  func.return %y : tensor<1x4x3x8xf32>
}
// CHECK:      %y = nn.attention %q, %kt, %v, %mask : (tensor<1x4x3x8xf32>, tensor<1x1x8x5xf32>, tensor<1x1x5x8xf32>, tensor<1x1x3x5xf32>) -> tensor<1x4x3x8xf32>
// CHECK-NEXT: func.return %y

// -----
// PyTorch's scaled_dot_product_attention: the Softmax's NaN rows set to 0 (IsNaN,
// Where) before the second MatMul.
func.func @main(%q: tensor<1x2x3x4xf32>, %kt: tensor<1x2x4x3xf32>, %v: tensor<1x2x3x4xf32>, %mask: tensor<1x1x3x3xf32>) -> tensor<1x2x3x4xf32> {
  %zero = nn.weight "zero" dense<0.0> : tensor<f32>
  %s = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %m = nn.add %s, %mask : (tensor<1x2x3x3xf32>, tensor<1x1x3x3xf32>) -> tensor<1x2x3x3xf32>
  %p = nn.softmax %m {axis = -1 : i64} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %n = nn.is_nan %p : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xi1>
  %z = nn.where %n, %zero, %p : (tensor<1x2x3x3xi1>, tensor<f32>, tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y = nn.matmul %z, %v : (tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  func.return %y : tensor<1x2x3x4xf32>
}
// CHECK:      func.func @main(
// CHECK-NEXT:   %y = nn.attention %q, %kt, %v, %mask {nan_rows_to_zero = 1 : i64}
// CHECK-NEXT:   func.return %y

// -----
// No mask; the scale a Mul by a constant on its left.
func.func @main(%q: tensor<2x2x3x8xf32>, %kt: tensor<2x2x8x3xf32>, %v: tensor<2x2x3x16xf32>) -> tensor<2x2x3x16xf32> {
  %c = nn.weight "c" dense<0.25> : tensor<1xf32>
  %s = nn.matmul %q, %kt : (tensor<2x2x3x8xf32>, tensor<2x2x8x3xf32>) -> tensor<2x2x3x3xf32>
  %d = nn.mul %c, %s : (tensor<1xf32>, tensor<2x2x3x3xf32>) -> tensor<2x2x3x3xf32>
  %p = nn.softmax %d : (tensor<2x2x3x3xf32>) -> tensor<2x2x3x3xf32>
  %y = nn.matmul %p, %v : (tensor<2x2x3x3xf32>, tensor<2x2x3x16xf32>) -> tensor<2x2x3x16xf32>
  func.return %y : tensor<2x2x3x16xf32>
}
// CHECK:      %y = nn.attention %q, %kt, %v {scale = 2.500000e-01 : f32}
// CHECK-NEXT: func.return %y

// -----
// MPNet's: the position bias, then the mask, added to the scaled scores, in two layers
// that add the same two terms: one Add sums them into the mask both attentions read.
func.func @main(%q: tensor<?x2x?x4xf32>, %kt: tensor<?x2x4x?xf32>, %v: tensor<?x2x?x4xf32>, %bias: tensor<?x2x?x?xf32>, %mask: tensor<?x1x1x?xf32>) -> (tensor<?x2x?x4xf32>, tensor<?x2x?x4xf32>) {
  %c = nn.weight "c" dense<2.0> : tensor<f32>
  %s = nn.matmul %q, %kt : (tensor<?x2x?x4xf32>, tensor<?x2x4x?xf32>) -> tensor<?x2x?x?xf32>
  %d = nn.div %s, %c : (tensor<?x2x?x?xf32>, tensor<f32>) -> tensor<?x2x?x?xf32>
  %b = nn.add %d, %bias : (tensor<?x2x?x?xf32>, tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %m = nn.add %b, %mask : (tensor<?x2x?x?xf32>, tensor<?x1x1x?xf32>) -> tensor<?x2x?x?xf32>
  %p = nn.softmax %m {axis = -1 : i64} : (tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %y = nn.matmul %p, %v : (tensor<?x2x?x?xf32>, tensor<?x2x?x4xf32>) -> tensor<?x2x?x4xf32>
  %s2 = nn.matmul %y, %kt : (tensor<?x2x?x4xf32>, tensor<?x2x4x?xf32>) -> tensor<?x2x?x?xf32>
  %b2 = nn.add %bias, %s2 : (tensor<?x2x?x?xf32>, tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %m2 = nn.add %mask, %b2 : (tensor<?x1x1x?xf32>, tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %p2 = nn.softmax %m2 {axis = -1 : i64} : (tensor<?x2x?x?xf32>) -> tensor<?x2x?x?xf32>
  %y2 = nn.matmul %p2, %v : (tensor<?x2x?x?xf32>, tensor<?x2x?x4xf32>) -> tensor<?x2x?x4xf32>
  func.return %y, %y2 : tensor<?x2x?x4xf32>, tensor<?x2x?x4xf32>
}
// CHECK:      func.func @main(
// CHECK-NEXT:   %attention_mask = nn.add %bias, %mask : (tensor<?x2x?x?xf32>, tensor<?x1x1x?xf32>) -> tensor<?x2x?x?xf32>
// CHECK-NEXT:   %y = nn.attention %q, %kt, %v, %attention_mask {scale = 5.000000e-01 : f32}
// CHECK-NEXT:   %y2 = nn.attention %y, %kt, %v, %attention_mask : (
// CHECK-NEXT:   func.return %y, %y2

// -----
// Left alone: three terms added to the scores (more than MAX_ADDED_TERMS).
func.func @main(%q: tensor<1x2x3x4xf32>, %kt: tensor<1x2x4x3xf32>, %v: tensor<1x2x3x4xf32>, %a: tensor<1x2x3x3xf32>) -> tensor<1x2x3x4xf32> {
  %s = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %t1 = nn.add %s, %a : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %t2 = nn.add %t1, %a : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %t3 = nn.add %t2, %a : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %p = nn.softmax %t3 : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y = nn.matmul %p, %v : (tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  func.return %y : tensor<1x2x3x4xf32>
}
// CHECK:      %t3 = nn.add %t2, %a
// CHECK:      %y = nn.matmul %p, %v
// CHECK-NOT:  nn.attention

// -----
// Left alone: a Softmax over another axis; scores something else reads; a product of
// probabilities by something of rank 3; a scale that is no constant.
func.func @main(%q: tensor<1x2x3x4xf32>, %kt: tensor<1x2x4x3xf32>, %v: tensor<1x2x3x4xf32>, %w: tensor<2x3x4xf32>, %c: tensor<f32>) -> (tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>, tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>) {
  %s1 = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %p1 = nn.softmax %s1 {axis = 2 : i64} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y1 = nn.matmul %p1, %v : (tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  %s2 = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %p2 = nn.softmax %s2 : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y2 = nn.matmul %p2, %v : (tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  %s3 = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %p3 = nn.softmax %s3 : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y3 = nn.matmul %p3, %w : (tensor<1x2x3x3xf32>, tensor<2x3x4xf32>) -> tensor<1x2x3x4xf32>
  %s4 = nn.matmul %q, %kt : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  %d4 = nn.div %s4, %c : (tensor<1x2x3x3xf32>, tensor<f32>) -> tensor<1x2x3x3xf32>
  %p4 = nn.softmax %d4 : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %y4 = nn.matmul %p4, %v : (tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>) -> tensor<1x2x3x4xf32>
  func.return %y1, %y2, %s2, %y3, %y4 : tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>, tensor<1x2x3x3xf32>, tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>
}
// CHECK:      %p1 = nn.softmax %s1 {axis = 2 : i64}
// CHECK:      %y2 = nn.matmul %p2, %v
// CHECK:      %y3 = nn.matmul %p3, %w
// CHECK:      %y4 = nn.matmul %p4, %v
// CHECK-NOT:  nn.attention

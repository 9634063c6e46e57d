// fold-scale: a Mul or Div by one constant value moves back through views and a
// product of activations into the weight (and bias) of the layer whose result it
// scales; the old weights and the constant leave the store once nothing reads them.
// RUN: sparsec opt %s --split-input-file -p fold-scale | filecheck %s
// RUN: not sparsec opt %s -p 'fold-scale{factor=2}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fold-scale' has no option 'factor' (options: none)

// BERT's attention: the scores q @ k^T divided by 2; the queries' layer takes 1/2.
func.func @main(%x: tensor<?x4x8xf32>) -> tensor<?x2x4x4xf32> {
  %wq = nn.weight "wq" dense<0.5> : tensor<8x8xf32>
  %bq = nn.weight "bq" dense<1.0> : tensor<8xf32>
  %wk = nn.weight "wk" dense<0.25> : tensor<8x8xf32>
  %c = nn.weight "c" dense<2.0> : tensor<f32>
  %q = nn.matmul %x, %wq : (tensor<?x4x8xf32>, tensor<8x8xf32>) -> tensor<?x4x8xf32>
  %qb = nn.add %q, %bq : (tensor<?x4x8xf32>, tensor<8xf32>) -> tensor<?x4x8xf32>
  %qh = nn.reshape %qb {shape = array<i64: 0, 4, 2, 4>} : (tensor<?x4x8xf32>) -> tensor<?x4x2x4xf32>
  %qt = nn.transpose %qh {perm = array<i64: 0, 2, 1, 3>} : (tensor<?x4x2x4xf32>) -> tensor<?x2x4x4xf32>
  %k = nn.matmul %x, %wk : (tensor<?x4x8xf32>, tensor<8x8xf32>) -> tensor<?x4x8xf32>
  %kh = nn.reshape %k {shape = array<i64: 0, 4, 2, 4>} : (tensor<?x4x8xf32>) -> tensor<?x4x2x4xf32>
  %kt = nn.transpose %kh {perm = array<i64: 0, 2, 3, 1>} : (tensor<?x4x2x4xf32>) -> tensor<?x2x4x4xf32>
  %s = nn.matmul %qt, %kt : (tensor<?x2x4x4xf32>, tensor<?x2x4x4xf32>) -> tensor<?x2x4x4xf32>
  %y = nn.div %s, %c : (tensor<?x2x4x4xf32>, tensor<f32>) -> tensor<?x2x4x4xf32>
  func.return %y : tensor<?x2x4x4xf32>
}
// CHECK:      func.func @main(%x: tensor<?x4x8xf32>) -> tensor<?x2x4x4xf32> {
// CHECK-NEXT:   %wq_scaled = nn.weight "wq_scaled" dense<0.25> : tensor<8x8xf32>
// CHECK-NEXT:   %bq_scaled = nn.weight "bq_scaled" dense<0.5> : tensor<8xf32>
// CHECK-NEXT:   %wk = nn.weight "wk" dense<0.25> : tensor<8x8xf32>
// CHECK-NEXT:   %q = nn.matmul %x, %wq_scaled
// CHECK-NEXT:   %qb = nn.add %q, %bq_scaled
// CHECK:        %y = nn.matmul %qt, %kt
// CHECK-NEXT:   func.return %y
// CHECK-NOT:    nn.div

// -----
// The dynamo exporter's head split: a reshape to a shape computed at run time, which
// the scale passes like any other (its shape operand is no data).
func.func @main(%x: tensor<?x4x8xf32>, %shape: tensor<4xi64>) -> tensor<?x?x?x?xf32> {
  %wq = nn.weight "wq" dense<0.5> : tensor<8x8xf32>
  %c = nn.weight "c" dense<0.25> : tensor<f32>
  %q = nn.matmul %x, %wq : (tensor<?x4x8xf32>, tensor<8x8xf32>) -> tensor<?x4x8xf32>
  %qh = nn.dynamic_reshape %q, %shape : (tensor<?x4x8xf32>, tensor<4xi64>) -> tensor<?x?x?x?xf32>
  %y = nn.mul %qh, %c : (tensor<?x?x?x?xf32>, tensor<f32>) -> tensor<?x?x?x?xf32>
  func.return %y : tensor<?x?x?x?xf32>
}
// CHECK:      %wq_scaled = nn.weight "wq_scaled" dense<0.125> : tensor<8x8xf32>
// CHECK-NEXT: %q = nn.matmul %x, %wq_scaled
// CHECK-NEXT: %y = nn.dynamic_reshape %q, %shape
// CHECK-NEXT: func.return %y
// CHECK-NOT:  nn.mul

// -----
// PyTorch's scaled_dot_product_attention scales the queries before the product; a
// Gemm takes the factor in B and C. The weight %w has another reader, which keeps it.
func.func @main(%x: tensor<?x8xf32>) -> (tensor<?x4xf32>, tensor<?x4xf32>) {
  %w = nn.weight "w" dense<2.0> : tensor<4x8xf32>
  %b = nn.weight "b" dense<1.0> : tensor<4xf32>
  %c = nn.weight "c" dense<0.5> : tensor<1xf32>
  %g = nn.gemm %x, %w, %b {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  %y = nn.mul %c, %g : (tensor<1xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  %z = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  func.return %y, %z : tensor<?x4xf32>, tensor<?x4xf32>
}
// CHECK:      %w = nn.weight "w" dense<2.0> : tensor<4x8xf32>
// CHECK-NEXT: %w_scaled = nn.weight "w_scaled" dense<1.0> : tensor<4x8xf32>
// CHECK-NEXT: %b_scaled = nn.weight "b_scaled" dense<0.5> : tensor<4xf32>
// CHECK-NEXT: %y = nn.gemm %x, %w_scaled, %b_scaled {trans_b = 1 : i64}
// CHECK-NEXT: %z = nn.gemm %x, %w {trans_b = 1 : i64}
// CHECK-NOT:  nn.mul

// -----
// LLaMA's: the scores of rotated queries (a rotary embedding is linear in x) and keys,
// times 1 / sqrt(8): the scale goes back through the rotation and the head split into
// the query layer's weight; cos and sin stay.
func.func @main(%x: tensor<1x5x16xf32>, %k: tensor<1x2x8x5xf32>, %cos: tensor<1x1x5x8xf32>, %sin: tensor<1x1x5x8xf32>) -> tensor<1x2x5x5xf32> {
  %wq = nn.weight "wq" dense<1.0> : tensor<16x16xf32>
  %c = nn.weight "c" dense<0.353553385> : tensor<f32>
  %q = nn.matmul %x, %wq : (tensor<1x5x16xf32>, tensor<16x16xf32>) -> tensor<1x5x16xf32>
  %h = nn.reshape %q {shape = array<i64: 1, 5, 2, 8>} : (tensor<1x5x16xf32>) -> tensor<1x5x2x8xf32>
  %t = nn.transpose %h {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x5x2x8xf32>) -> tensor<1x2x5x8xf32>
  %r = nn.rotary_embedding %t, %cos, %sin : (tensor<1x2x5x8xf32>, tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32>) -> tensor<1x2x5x8xf32>
  %s = nn.matmul %r, %k : (tensor<1x2x5x8xf32>, tensor<1x2x8x5xf32>) -> tensor<1x2x5x5xf32>
  %y = nn.mul %s, %c : (tensor<1x2x5x5xf32>, tensor<f32>) -> tensor<1x2x5x5xf32>
  func.return %y : tensor<1x2x5x5xf32>
}
// CHECK:      %wq_scaled = nn.weight "wq_scaled" dense<0.35355338> : tensor<16x16xf32>
// CHECK:      %r = nn.rotary_embedding %t, %cos, %sin
// CHECK-NEXT: %y = nn.matmul %r, %k
// CHECK-NEXT: func.return %y

// -----
// Not folded: a value on the way with another reader (%q is returned), a scale of
// more than one value, a zero scale, and a scale after a Relu (which does not
// commute with a negative one, so the pass does not look past it).
func.func @main(%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %w = nn.weight "w" dense<2.0> : tensor<8x8xf32>
  %c = nn.weight "c" dense<0.5> : tensor<f32>
  %cs = nn.weight "cs" dense<0.5> : tensor<8xf32>
  %zero = nn.weight "zero" dense<0.0> : tensor<f32>
  %q = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %y1 = nn.mul %q, %c : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %q2 = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %y2 = nn.mul %q2, %cs : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %q3 = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %y3 = nn.mul %q3, %zero : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %q4 = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %r4 = nn.relu %q4 : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %y4 = nn.mul %r4, %c : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  func.return %q, %y1, %y2, %y3, %y4 : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: _scaled
// CHECK:     %y1 = nn.mul %q, %c
// CHECK:     %y2 = nn.mul %q2, %cs
// CHECK:     %y3 = nn.mul %q3, %zero
// CHECK:     %y4 = nn.mul %r4, %c
// CHECK-NOT: _scaled

// fuse-rotary: rotary position embeddings written out, x * cos + rotate_half(x) * sin
// as PyTorch exports LLaMA's, become one nn.rotary_embedding; the Slices' bounds leave
// the module.
// RUN: sparsec opt %s --split-input-file -p fuse-rotary | filecheck %s
// RUN: not sparsec opt %s -p 'fuse-rotary{interleaved=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-rotary' has no option 'interleaved' (options: none)

// The TorchScript exporter's, for the queries of 2 heads of 8: the end of the second
// half as INT64_MAX, the axis as -1.
func.func @main(%x: tensor<?x2x?x8xf32>, %cos: tensor<1x1x?x8xf32>, %sin: tensor<1x1x?x8xf32>) -> tensor<?x2x?x8xf32> {
  %zero = nn.weight "zero" dense<[0]> : tensor<1xi64>
  %half = nn.weight "half" dense<[4]> : tensor<1xi64>
  %end = nn.weight "end" dense<[9223372036854775807]> : tensor<1xi64>
  %last = nn.weight "last" dense<[-1]> : tensor<1xi64>
  %one = nn.weight "one" dense<[1]> : tensor<1xi64>
  %a = nn.mul %x, %cos : (tensor<?x2x?x8xf32>, tensor<1x1x?x8xf32>) -> tensor<?x2x?x8xf32>
  %s1 = nn.slice %x, %zero, %half, %last, %one : (tensor<?x2x?x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32>
  %s2 = nn.slice %x, %half, %end, %last, %one : (tensor<?x2x?x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32>
  %n = nn.neg %s2 : (tensor<?x2x?x4xf32>) -> tensor<?x2x?x4xf32>
  %c = nn.concat %n, %s1 {axis = -1 : i64} : (tensor<?x2x?x4xf32>, tensor<?x2x?x4xf32>) -> tensor<?x2x?x8xf32>
  %b = nn.mul %c, %sin : (tensor<?x2x?x8xf32>, tensor<1x1x?x8xf32>) -> tensor<?x2x?x8xf32>
  %y = nn.add %a, %b : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32>
  func.return %y : tensor<?x2x?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x2x?x8xf32>, %cos: tensor<1x1x?x8xf32>, %sin: tensor<1x1x?x8xf32>) -> tensor<?x2x?x8xf32> {
// CHECK-NEXT:   %y = nn.rotary_embedding %x, %cos, %sin : (tensor<?x2x?x8xf32>, tensor<1x1x?x8xf32>, tensor<1x1x?x8xf32>) -> tensor<?x2x?x8xf32>
// CHECK-NEXT:   func.return %y : tensor<?x2x?x8xf32>
// CHECK-NEXT: }

// -----
// The dynamo exporter's: the axis as 3, the halves' end as 8, the products the other
// way round.
func.func @main(%x: tensor<1x2x5x8xf32>, %cos: tensor<1x1x5x8xf32>, %sin: tensor<1x1x5x8xf32>) -> tensor<1x2x5x8xf32> {
  %zero = nn.weight "zero" dense<[0]> : tensor<1xi64>
  %half = nn.weight "half" dense<[4]> : tensor<1xi64>
  %end = nn.weight "end" dense<[8]> : tensor<1xi64>
  %axis = nn.weight "axis" dense<[3]> : tensor<1xi64>
  %one = nn.weight "one" dense<[1]> : tensor<1xi64>
  %a = nn.mul %cos, %x : (tensor<1x1x5x8xf32>, tensor<1x2x5x8xf32>) -> tensor<1x2x5x8xf32>
  %s1 = nn.slice %x, %zero, %half, %axis, %one : (tensor<1x2x5x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x5x4xf32>
  %s2 = nn.slice %x, %half, %end, %axis, %one : (tensor<1x2x5x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x5x4xf32>
  %n = nn.neg %s2 : (tensor<1x2x5x4xf32>) -> tensor<1x2x5x4xf32>
  %c = nn.concat %n, %s1 {axis = 3 : i64} : (tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32>) -> tensor<1x2x5x8xf32>
  %b = nn.mul %sin, %c : (tensor<1x1x5x8xf32>, tensor<1x2x5x8xf32>) -> tensor<1x2x5x8xf32>
  %y = nn.add %b, %a : (tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>) -> tensor<1x2x5x8xf32>
  func.return %y : tensor<1x2x5x8xf32>
}
// CHECK:      %y = nn.rotary_embedding %x, %cos, %sin : (tensor<1x2x5x8xf32>, tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32>) -> tensor<1x2x5x8xf32>
// CHECK-NEXT: func.return %y

// -----
// Left alone: halves swapped in the Concat (a rotation the other way), a slice of
// another tensor than the product's, and a Neg read twice.
func.func @main(%x: tensor<2x8xf32>, %w: tensor<2x8xf32>, %cos: tensor<2x8xf32>, %sin: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x4xf32>) {
  %zero = nn.weight "zero" dense<[0]> : tensor<1xi64>
  %half = nn.weight "half" dense<[4]> : tensor<1xi64>
  %end = nn.weight "end" dense<[8]> : tensor<1xi64>
  %last = nn.weight "last" dense<[-1]> : tensor<1xi64>
  %one = nn.weight "one" dense<[1]> : tensor<1xi64>
  %a1 = nn.mul %x, %cos : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %f1 = nn.slice %x, %zero, %half, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %g1 = nn.slice %x, %half, %end, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %n1 = nn.neg %g1 : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %c1 = nn.concat %f1, %n1 {axis = -1 : i64} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  %b1 = nn.mul %c1, %sin : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y1 = nn.add %a1, %b1 : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %a2 = nn.mul %w, %cos : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %f2 = nn.slice %x, %zero, %half, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %g2 = nn.slice %x, %half, %end, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %n2 = nn.neg %g2 : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %c2 = nn.concat %n2, %f2 {axis = -1 : i64} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  %b2 = nn.mul %c2, %sin : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y2 = nn.add %a2, %b2 : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %a3 = nn.mul %x, %cos : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %f3 = nn.slice %x, %zero, %half, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %g3 = nn.slice %x, %half, %end, %last, %one : (tensor<2x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32>
  %n3 = nn.neg %g3 : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %c3 = nn.concat %n3, %f3 {axis = -1 : i64} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  %b3 = nn.mul %c3, %sin : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y3 = nn.add %a3, %b3 : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y1, %y2, %y3, %n3 : tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x4xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.rotary_embedding
// CHECK:     %y1 = nn.add %a1, %b1
// CHECK:     %y2 = nn.add %a2, %b2
// CHECK:     %y3 = nn.add %a3, %b3

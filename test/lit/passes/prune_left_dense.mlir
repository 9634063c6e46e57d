// Layers left dense for the same reason share one warning, naming the first three;
// another reason gets its own.
// RUN: sparsec opt %s -p 'prune-magnitude{pattern=nm n=2 m=4 min-elements=0}' 2>&1 | filecheck %s
// CHECK:     sparsec: warning: prune-magnitude: 4 layers ('w0', 'w1', 'w2' and 1 more) left dense: m 4 exceeds half of axis 1 (4 channels)
// CHECK:     sparsec: warning: prune-magnitude: layer 'w4' left dense: m 4 exceeds half of axis 1 (6 channels)
// CHECK-NOT: warning

func.func @main(%x: tensor<?x4xf32>, %z: tensor<?x6xf32>) -> (tensor<?x2xf32>, tensor<?x2xf32>) {
  %w0 = nn.weight "w0" dense<1.0> : tensor<2x4xf32>
  %w1 = nn.weight "w1" dense<2.0> : tensor<2x4xf32>
  %w2 = nn.weight "w2" dense<3.0> : tensor<4x4xf32>
  %w3 = nn.weight "w3" dense<4.0> : tensor<2x4xf32>
  %w4 = nn.weight "w4" dense<5.0> : tensor<2x6xf32>
  %a = nn.gemm %x, %w0 {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  %b = nn.gemm %x, %w1 {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  %c = nn.gemm %x, %w2 {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
  %d = nn.gemm %c, %w3 {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  %e = nn.gemm %z, %w4 {trans_b = 1 : i64} : (tensor<?x6xf32>, tensor<2x6xf32>) -> tensor<?x2xf32>
  %s = nn.add %a, %b : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32>
  %t = nn.add %d, %e : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32>
  func.return %s, %t : tensor<?x2xf32>, tensor<?x2xf32>
}

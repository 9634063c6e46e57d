// prune-threshold zeroes |w| <= threshold, only where the layer reaches min-sparsity.
// RUN: sparsec opt %s -p 'prune-threshold{threshold=0.1 min-sparsity=0.5 min-elements=0}' | filecheck %s
// RUN: sparsec opt %s -p 'prune-threshold{threshold=1e-1 min-sparsity=5e-1 min-elements=0}' | filecheck %s

func.func @main(%x: tensor<?x4xf32>) -> (tensor<?x1xf32>, tensor<?x1xf32>) {
  %a = nn.weight "a" dense<[[0.05, -0.1, 0.3, 2.0]]> : tensor<1x4xf32>
  %b = nn.weight "b" dense<[[0.05, 0.2, 0.3, 2.0]]> : tensor<1x4xf32>
  %ya = nn.gemm %x, %a {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<1x4xf32>) -> tensor<?x1xf32>
  %yb = nn.gemm %x, %b {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<1x4xf32>) -> tensor<?x1xf32>
  func.return %ya, %yb : tensor<?x1xf32>, tensor<?x1xf32>
}
// CHECK: %a = nn.weight "a" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[}}0.0, 0.0, 0.3, 2.0]]>
// CHECK: %b = nn.weight "b" dense<{{\[\[}}0.05, 0.2, 0.3, 2.0]]>

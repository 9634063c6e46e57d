// Weights with at most min-elements values (default 2048, as coremltools) stay dense,
// and so do layers whose block or m exceeds half the pruned axis (as coremltools).
// RUN: sparsec opt %s -p 'prune-magnitude{sparsity=0.5}' | filecheck %s --check-prefix=SMALL
// RUN: sparsec opt %s -p 'prune-magnitude{pattern=nm n=2 m=4 min-elements=0}' 2>&1 | filecheck %s --check-prefix=HALF

func.func @main(%x: tensor<?x4xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// SMALL: %w = nn.weight "w" dense<{{\[\[}}1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]>
// HALF: sparsec: warning: prune-magnitude: layer 'w' left dense: m 4 exceeds half of axis 1 (4 channels)
// HALF: %w = nn.weight "w" dense<{{\[\[}}1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]>


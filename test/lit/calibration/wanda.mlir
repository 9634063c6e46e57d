// Wanda scores |W| x ||X_j||: with equal-ish magnitudes, the inputs that carry little
// signal are pruned. Column norms here are 10, 1, 1, 0.1.
// RUN: %python -c "import numpy as np; np.savez('%t.npz', x=np.array([[10.0, 1.0, 1.0, 0.1]], np.float32))"
// RUN: sparsec opt %s -p 'prune-wanda{sparsity=0.5 min-elements=0 calibration="%t.npz"}' | filecheck %s
// RUN: sparsec opt %s -p 'prune-magnitude{sparsity=0.5 min-elements=0}' | filecheck %s --check-prefix=MAGNITUDE
// RUN: not sparsec opt %s -p 'prune-wanda{sparsity=0.5}' 2>&1 | filecheck %s --check-prefix=NEEDS
// RUN: not sparsec opt %s -p 'prune-wanda{sparsity=0.5 calibration="%t.missing.npz"}' 2>&1 | filecheck %s --check-prefix=MISSING

func.func @main(%x: tensor<?x4xf32> {sparsec.name = "x"}) -> tensor<?x2xf32> {
  %w = nn.weight "w" dense<[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]> : tensor<2x4xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// Scores row 0: 10, 2, 3, 0.4; row 1: 40, 3, 2, 0.1. Each row loses its two lowest.
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<{{\[\[}}1.0, 0.0, 3.0, 0.0], [4.0, 3.0, 0.0, 0.0]]>
// MAGNITUDE: dense<{{\[\[}}0.0, 0.0, 3.0, 4.0], [4.0, 3.0, 0.0, 0.0]]>
// NEEDS: sparsec: error: prune-wanda: needs option 'calibration' (an .npz of model inputs)
// MISSING: sparsec: error: calibration file '{{.*}}missing.npz': cannot read

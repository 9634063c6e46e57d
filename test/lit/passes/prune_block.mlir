// Block: blocks of B values along the output channels, ranked by L2 norm.
// RUN: sparsec opt %s --split-input-file -p 'prune-magnitude{pattern=block block-size=2 sparsity=0.5 min-elements=0}' | filecheck %s

// W (4 out, 2 in): blocks are rows {0,1} and {2,3} of each column; column 0 blocks
// have norms |(1,1)| and |(5,5)|, column 1 |(9,9)| and |(2,2)|: the two smallest go.
func.func @main(%x: tensor<?x2xf32>) -> tensor<?x4xf32> {
  %w = nn.weight "w" dense<[[1.0, 9.0], [1.0, 9.0], [5.0, 2.0], [5.0, 2.0]]> : tensor<4x2xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x2xf32>, tensor<4x2xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
// CHECK: %w = nn.weight "w" {sparsity = #sparse.pattern<block 2, axis = 0, sparsity = 0.5>} dense<{{\[\[}}0.0, 9.0], [0.0, 9.0], [5.0, 0.0], [5.0, 0.0]]> : tensor<4x2xf32>

// -----
// Conv (out, in, kh, kw): a block spans 2 output channels at one (in, kh, kw) position.
func.func @main(%x: tensor<1x1x2x2xf32>) -> tensor<1x4x2x2xf32> {
  %w = nn.weight "w" dense<[[[[1.0]]], [[[1.0]]], [[[3.0]]], [[[3.0]]]]> : tensor<4x1x1x1xf32>
  %y = nn.conv %x, %w : (tensor<1x1x2x2xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
// CHECK: dense<{{\[\[\[\[}}0.0]]], {{\[\[\[}}0.0]]], {{\[\[\[}}3.0]]], {{\[\[\[}}3.0]]]]> : tensor<4x1x1x1xf32>

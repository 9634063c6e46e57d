// auto picks the smallest encoding the pattern allows: n:m and block beat the bitmask.
// RUN: sparsec opt %s --split-input-file -p pack-bitmask | filecheck %s
// RUN: sparsec opt %s --split-input-file -p 'pack-bitmask{encoding=bitmask}' | filecheck %s --check-prefix=BITMASK
// RUN: sparsec opt %s --split-input-file -p 'pack-bitmask{encoding=block}' 2>&1 | filecheck %s --check-prefix=FALLBACK

// nm 2:4 on a (2 out, 8 in) weight: 4 runs x 2 kept values (16 bytes) + 8 positions of 2 bits (2 bytes),
// positions 1 2, 0 1, 2 3, 0 1 packed two bits each, least-significant first: 73, 78.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[0.0, -4.0, 3.0, 0.0, 8.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.4, 4.0, 3.0, 0.0, 0.0]]> : tensor<2x8xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %w = sparse.packed "w" {encoding = #sparse.encoding<nm 2:4, axis = 1, values = f16>, bytes = 18 : i64
// CHECK-SAME: (values = dense<[-4.0, 3.0, 8.0, 7.0, 0.3, 0.4, 4.0, 3.0]> : tensor<8xf16>, positions = dense<[73, 78]> : tensor<2xui8>)
// BITMASK: %w = sparse.packed "w" {encoding = #sparse.encoding<bitmask, values = f16>, bytes = 18 : i64
// FALLBACK: sparsec: warning: pack-bitmask: weight 'w' has pattern nm, which encoding block cannot store; packing it as bitmask

// -----
// MatMul's weight is stored (in, out): the n:m axis 1 of the (out, in) view is stored axis 0.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[0.0], [0.0], [3.0], [4.0], [8.0], [7.0], [0.0], [0.0]]> : tensor<8x1xf32>
  %y = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK: %w = sparse.packed "w" {encoding = #sparse.encoding<nm 2:4, axis = 0, values = f16>, bytes = 9 : i64

// -----
// block 2 along the output channels of a (4 out, 2 in) weight: 4 blocks -> 1 mask byte, 2 kept blocks of 2 values.
func.func @main(%x: tensor<?x2xf32>) -> tensor<?x4xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<block 2, axis = 0, sparsity = 0.5>} dense<[[0.0, 9.0], [0.0, 9.0], [5.0, 0.0], [5.0, 0.0]]> : tensor<4x2xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x2xf32>, tensor<4x2xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
// CHECK: %w = sparse.packed "w" {encoding = #sparse.encoding<block 2, axis = 0, values = f16>, bytes = 9 : i64
// CHECK-SAME: (blocks = dense<[6]> : tensor<1xui8>, values = dense<[5.0, 5.0, 9.0, 9.0]> : tensor<4xf16>)

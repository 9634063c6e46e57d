// pack-bitmask: Core ML's layout. {0, 7, 0, 0, 0, 0, 0, 56.3} -> mask 0x82 (130), values {7, 56.3}.
// RUN: sparsec opt %s --split-input-file -p pack-bitmask | filecheck %s
// RUN: sparsec opt %s --split-input-file -p 'pack-bitmask{dtype=fp32}' | filecheck %s --check-prefix=FP32

func.func @main(%x: tensor<?x8xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.75>} dense<[[0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 56.3]]> : tensor<1x8xf32>
  %b = nn.weight "b" dense<[1.0]> : tensor<1xf32>
  %y = nn.gemm %x, %w, %b {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<1x8xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK:      %w = sparse.packed "w" {encoding = #sparse.encoding<bitmask, values = f16>, bytes = 5 : i64, sparsity = #sparse.pattern<unstructured, sparsity = 0.75>}
// CHECK-SAME:   (mask = dense<[130]> : tensor<1xui8>, values = dense<[7.0, 56.3]> : tensor<2xf16>) : tensor<1x8xf32>
// CHECK-NEXT: %b = nn.weight "b" dense<[1.0]> : tensor<1xf32>
// FP32:       %w = sparse.packed "w" {encoding = #sparse.encoding<bitmask, values = f32>, bytes = 9 : i64
// FP32-SAME:    values = dense<[7.0, 56.3]> : tensor<2xf32>

// -----
// 12 values (not a multiple of 8): two mask bytes, element i is bit i % 8 of byte i // 8.
func.func @main(%x: tensor<?x12xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 4.0, 5.0]]> : tensor<1x12xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x12xf32>, tensor<1x12xf32>) -> tensor<?x1xf32>
  func.return %y : tensor<?x1xf32>
}
// CHECK: bytes = 12 : i64
// CHECK-SAME: (mask = dense<[1, 15]> : tensor<2xui8>, values = dense<[1.0, 2.0, 3.0, 4.0, 5.0]> : tensor<5xf16>)

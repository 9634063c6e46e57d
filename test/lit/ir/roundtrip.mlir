// Printing then parsing preserves the IR and every inline weight bit for bit
// (floats print as the shortest decimal that reads back exactly).
// RUN: sparsec opt %s | sparsec opt | filecheck %s

func.func @main(%x: tensor<?x3xf32> {sparsec.name = "x"}) -> (tensor<?x2xf32> {sparsec.name = "y"}) {
  %w = nn.weight "fc.w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[0.1, 0.016806375, 1.0e-30], [3.4028235e+38, -0.0, 1.4e-45]]> : tensor<2x3xf32>
  %b = nn.weight "fc.b" dense<"0x0000C07F0000807F"> : tensor<2xf32>
  %h = nn.weight "fc.h" dense<[1.0, 0.33325]> : tensor<2xf16>
  %i = nn.weight "idx" dense<[-9223372036854775807, 5]> : tensor<2xi64>
  %y = nn.gemm %x, %w, %b {trans_b = 1 : i64, alpha = 0.5 : f32} : (tensor<?x3xf32>, tensor<2x3xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}

// CHECK:      func.func @main(%x: tensor<?x3xf32> {sparsec.name = "x"}) -> (tensor<?x2xf32> {sparsec.name = "y"}) {
// CHECK-NEXT:   %w = nn.weight "fc.w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<{{\[\[}}0.1, 0.016806375, 1.0e-30], [3.4028235e+38, -0.0, 1.0e-45]]> : tensor<2x3xf32>
// CHECK-NEXT:   %b = nn.weight "fc.b" dense<"0x0000C07F0000807F"> : tensor<2xf32>
// CHECK-NEXT:   %h = nn.weight "fc.h" dense<[1.0, 0.3333]> : tensor<2xf16>
// CHECK-NEXT:   %i = nn.weight "idx" dense<[-9223372036854775807, 5]> : tensor<2xi64>
// CHECK-NEXT:   %y = nn.gemm %x, %w, %b {trans_b = 1 : i64, alpha = 5.000000e-01 : f32}

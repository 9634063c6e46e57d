// RUN: sparsec opt %s -p strip-identity | filecheck %s

func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %a = nn.identity %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %b = nn.dropout %a : (tensor<2x3xf32>) -> tensor<2x3xf32>
  %c = nn.relu %b : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %c : tensor<2x3xf32>
}

// CHECK:      func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
// CHECK-NEXT:   %c = nn.relu %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
// CHECK-NEXT:   func.return %c : tensor<2x3xf32>

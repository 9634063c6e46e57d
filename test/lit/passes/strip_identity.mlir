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

// A Cast to the element type its input has and a Concat of one tensor go; a Cast that
// converts, and a Concat of one tensor that refines a size, stay.
func.func @casts(%x: tensor<?x4xf32>, %y: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?x4xf16>, tensor<2x4xf32>, tensor<?x4xf32>) {
  %same = nn.cast %x {to = 1 : i64} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  %half = nn.cast %same {to = 10 : i64} : (tensor<?x4xf32>) -> tensor<?x4xf16>
  %one = nn.concat %same {axis = 0 : i64} : (tensor<?x4xf32>) -> tensor<?x4xf32>
  %sized = nn.concat %x {axis = 0 : i64} : (tensor<?x4xf32>) -> tensor<2x4xf32>
  %two = nn.concat %one, %y {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %one, %half, %sized, %two : tensor<?x4xf32>, tensor<?x4xf16>, tensor<2x4xf32>, tensor<?x4xf32>
}

// CHECK:      func.func @casts(%x: tensor<?x4xf32>, %y: tensor<?x4xf32>)
// CHECK-NEXT:   %half = nn.cast %x {to = 10 : i64} : (tensor<?x4xf32>) -> tensor<?x4xf16>
// CHECK-NEXT:   %sized = nn.concat %x {axis = 0 : i64} : (tensor<?x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:   %two = nn.concat %x, %y {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
// CHECK-NEXT:   func.return %x, %half, %sized, %two

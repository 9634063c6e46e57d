// xDSL's generic cse and dce work on nn ops: two reads of one weight merge, unused ops go.
// RUN: sparsec opt %s -p cse,dce | filecheck %s

func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %w1 = nn.weight "w" dense<1.0> : tensor<3xf32>
  %w2 = nn.weight "w" dense<1.0> : tensor<3xf32>
  %a = nn.add %x, %w1 : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %b = nn.add %a, %w2 : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %unused = nn.relu %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %b : tensor<2x3xf32>
}

// CHECK:      %w1 = nn.weight "w" dense<1.0> : tensor<3xf32>
// CHECK-NEXT: %a = nn.add %x, %w1
// CHECK-NEXT: %b = nn.add %a, %w1
// CHECK-NOT:  nn.relu

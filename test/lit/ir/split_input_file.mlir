// --split-input-file processes each chunk on its own; errors keep the line numbers of the whole file.
// RUN: sparsec opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nn.relu %x : (tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}

// CHECK:      %y = nn.relu %x
// CHECK:      // -----

// -----

func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nn.nonsense %x : (tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}

// CHECK:      split_input_file.mlir:15:{{[0-9]+}}
// CHECK:      Operation nn.nonsense is not registered

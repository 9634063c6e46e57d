// lower-kernels: layers on packed weights become kernel ops; bias and a sole Relu, Gelu
// or SiLU fuse.
// RUN: sparsec opt %s --split-input-file -p 'pack-bitmask,lower-kernels' | filecheck %s

func.func @main(%x: tensor<?x8xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[0.0, -4.0, 3.0, 0.0, 8.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.4, 4.0, 3.0, 0.0, 0.0]]> : tensor<2x8xf32>
  %b = nn.weight "b" dense<[1.0, -1.0]> : tensor<2xf32>
  %y = nn.gemm %x, %w, %b {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  %r = nn.relu %y : (tensor<?x2xf32>) -> tensor<?x2xf32>
  func.return %r : tensor<?x2xf32>
}
// CHECK:      %r = sparse.matmul %x, %w, %b {kernel = "spmm_nm2_4_f16_2x8_bias_relu", kind = "nm", epilogue = "bias_relu", transposed = 0 : i64}
// CHECK-SAME:   : (tensor<?x8xf32>, tensor<2x8xf32>, tensor<2xf32>) -> tensor<?x2xf32>
// CHECK-NOT:  nn.relu
// CHECK-NEXT: func.return %r

// -----
// MatMul with an Add of a 1-D weight: the Add is the bias. The weight is stored (in, out).
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x1xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[0.0], [0.0], [3.0], [4.0], [8.0], [7.0], [0.0], [0.0]]> : tensor<8x1xf32>
  %b = nn.weight "b" dense<[2.0]> : tensor<1xf32>
  %y = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<?x1xf32>
  %z = nn.add %y, %b : (tensor<?x1xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  func.return %z : tensor<?x1xf32>
}
// CHECK: %z = sparse.matmul %x, %w, %b {kernel = "spmm_bitmask_f16_1x8_bias", kind = "bitmask", epilogue = "bias", transposed = 1 : i64}

// -----
// Conv (group 1) with blocks along the output channels uses the block kernel over the
// flattened (out, in * kh * kw) view.
func.func @main(%x: tensor<1x1x3x3xf32>) -> tensor<1x4x2x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<block 2, axis = 0, sparsity = 0.5>} dense<[[[[0.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]], [[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]]> : tensor<4x1x2x2xf32>
  %y = nn.conv %x, %w : (tensor<1x1x3x3xf32>, tensor<4x1x2x2xf32>) -> tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
// CHECK: %y = sparse.conv %x, %w {kernel = "spmm_block2_f16_4x4", kind = "block", epilogue = "none"}

// -----
// Not lowered: transposed A, a scaled product, and a weight that is not packed.
func.func @main(%x: tensor<8x2xf32>, %d: tensor<2x8xf32>) -> (tensor<2x2xf32>, tensor<?x2xf32>, tensor<2x2xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0], [5.0, 0.0, 6.0, 0.0, 7.0, 0.0, 8.0, 0.0]]> : tensor<2x8xf32>
  %a = nn.gemm %x, %w {trans_a = 1 : i64, trans_b = 1 : i64} : (tensor<8x2xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  %t = nn.transpose %x : (tensor<8x2xf32>) -> tensor<2x8xf32>
  %s = nn.gemm %t, %w {alpha = 2.0 : f32, trans_b = 1 : i64} : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  %u = nn.gemm %t, %d {trans_b = 1 : i64} : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  func.return %a, %s, %u : tensor<2x2xf32>, tensor<?x2xf32>, tensor<2x2xf32>
}
// CHECK: nn.gemm %x, %w {trans_a = 1 : i64, trans_b = 1 : i64}
// CHECK: nn.gemm %t, %w {alpha = 2.000000e+00 : f32, trans_b = 1 : i64}
// CHECK: nn.gemm %t, %d {trans_b = 1 : i64}
// CHECK-NOT: sparse.matmul
// CHECK: // {{-----}}

// -----
// MatMul + bias + exact Gelu fuse into one kernel, and so does the tanh approximation.
func.func @main(%x: tensor<?x8xf32>) -> (tensor<?x1xf32>, tensor<?x1xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[0.0], [0.0], [3.0], [4.0], [8.0], [7.0], [0.0], [0.0]]> : tensor<8x1xf32>
  %v = nn.weight "v" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[0.0], [1.0], [0.0], [4.0], [0.0], [7.0], [0.0], [2.0]]> : tensor<8x1xf32>
  %b = nn.weight "b" dense<[2.0]> : tensor<1xf32>
  %y = nn.matmul %x, %w : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<?x1xf32>
  %z = nn.add %y, %b : (tensor<?x1xf32>, tensor<1xf32>) -> tensor<?x1xf32>
  %g = nn.gelu %z : (tensor<?x1xf32>) -> tensor<?x1xf32>
  %u = nn.matmul %x, %v : (tensor<?x8xf32>, tensor<8x1xf32>) -> tensor<?x1xf32>
  %t = nn.gelu %u {approximate = "tanh"} : (tensor<?x1xf32>) -> tensor<?x1xf32>
  func.return %g, %t : tensor<?x1xf32>, tensor<?x1xf32>
}
// CHECK:      %g = sparse.matmul %x, %w, %b {kernel = "spmm_bitmask_f16_1x8_bias_gelu", kind = "bitmask", epilogue = "bias_gelu", transposed = 1 : i64}
// CHECK:      %t = sparse.matmul %x, %v {kernel = "spmm_bitmask_f16_1x8_gelu_tanh", kind = "bitmask", epilogue = "gelu_tanh", transposed = 1 : i64}
// CHECK-NOT:  nn.gelu

// -----
// A bitmask weight with no zeros costs more than dense float16: the dense kernel.
func.func @main(%x: tensor<?x4xf32>) -> tensor<?x2xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.0>} dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x4xf32>, tensor<2x4xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}
// CHECK: %y = sparse.matmul %x, %w {kernel = "spmm_dense_f16_2x4", kind = "dense", epilogue = "none", transposed = 0 : i64}

// -----
// An n:m Conv with a window uses the n:m kernel where its input channels (a group's)
// are whole runs: it reads the columns run by run, a run's 4 channels at each tap
// (runmajor). With 6 input channels (a ragged run) it is the bitmask kernel's.
func.func @main(%x: tensor<1x8x4x4xf32>, %s: tensor<1x6x4x4xf32>) -> (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]]], [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]]]]> : tensor<2x8x2x2xf32>
  %y = nn.conv %x, %w : (tensor<1x8x4x4xf32>, tensor<2x8x2x2xf32>) -> tensor<1x2x3x3xf32>
  %v = nn.weight "v" {sparsity = #sparse.pattern<nm 2:4, axis = 1>} dense<[[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[5.0, 6.0], [7.0, 8.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]]]]> : tensor<2x6x2x2xf32>
  %z = nn.conv %s, %v : (tensor<1x6x4x4xf32>, tensor<2x6x2x2xf32>) -> tensor<1x2x3x3xf32>
  func.return %y, %z : tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>
}
// CHECK:      %y = sparse.conv %x, %w {kernel = "spmm_nm2_4_f16_2x32_runmajor", kind = "nm", epilogue = "none"}
// CHECK:      %z = sparse.conv %s, %v {kernel = "spmm_bitmask_f16_2x24", kind = "bitmask", epilogue = "none"}

// -----
// Grouped convolutions lower with their groups (the runtime makes a call per group over
// its weight rows and input channels), but depthwise ones (one input channel a group:
// the runtime runs them as weighted pools) stay nn.conv. Block weights whose groups
// would split a block take the largest blocks that fit both (here blocks of 4, groups
// of 2 rows: blocks of 2), the bitmask kernel where none of two rows does (blocks of 2,
// groups of 3 rows).
func.func @main(%x: tensor<1x4x3x3xf32>, %x6: tensor<1x6x3x3xf32>) -> (tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>, tensor<1x4x3x2xf32>, tensor<1x6x3x3xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[[[1.0]], [[0.0]]], [[[0.0]], [[2.0]]], [[[3.0]], [[0.0]]], [[[0.0]], [[4.0]]]]> : tensor<4x2x1x1xf32>
  %y = nn.conv %x, %w {group = 2 : i64} : (tensor<1x4x3x3xf32>, tensor<4x2x1x1xf32>) -> tensor<1x4x3x3xf32>
  %d = nn.weight "d" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[[[1.0]]], [[[0.0]]], [[[3.0]]], [[[0.0]]]]> : tensor<4x1x1x1xf32>
  %z = nn.conv %x, %d {group = 4 : i64} : (tensor<1x4x3x3xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x3x3xf32>
  %b = nn.weight "b" {sparsity = #sparse.pattern<block 4, axis = 0, sparsity = 0.5>} dense<[[[[1.0, 2.0]], [[3.0, 4.0]]], [[[5.0, 6.0]], [[7.0, 8.0]]], [[[9.0, 1.0]], [[2.0, 3.0]]], [[[4.0, 5.0]], [[6.0, 7.0]]]]> : tensor<4x2x1x2xf32>
  %v = nn.conv %x, %b {group = 2 : i64} : (tensor<1x4x3x3xf32>, tensor<4x2x1x2xf32>) -> tensor<1x4x3x2xf32>
  %t = nn.weight "t" {sparsity = #sparse.pattern<block 2, axis = 0, sparsity = 0.5>} dense<[[[[0.0]], [[2.0]], [[0.0]]], [[[0.0]], [[5.0]], [[0.0]]], [[[7.0]], [[0.0]], [[9.0]]], [[[1.0]], [[0.0]], [[3.0]]], [[[0.0]], [[5.0]], [[0.0]]], [[[0.0]], [[8.0]], [[0.0]]]]> : tensor<6x3x1x1xf32>
  %u = nn.conv %x6, %t {group = 2 : i64} : (tensor<1x6x3x3xf32>, tensor<6x3x1x1xf32>) -> tensor<1x6x3x3xf32>
  func.return %y, %z, %v, %u : tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>, tensor<1x4x3x2xf32>, tensor<1x6x3x3xf32>
}
// CHECK:      %y = sparse.conv %x, %w {group = 2 : i64, kernel = "spmm_bitmask_f16_4x2", kind = "bitmask", epilogue = "none"}
// CHECK:      %z = nn.conv %x, %d {group = 4 : i64}
// CHECK:      %v = sparse.conv %x, %b {group = 2 : i64, kernel = "spmm_block2_f16_4x4", kind = "block", epilogue = "none"}
// CHECK:      %u = sparse.conv %x6, %t {group = 2 : i64, kernel = "spmm_bitmask_f16_6x3", kind = "bitmask", epilogue = "none"}

// -----
// An unpacked float32 1-D or 2-D Conv becomes the block kernel on its float32 values
// in blocks of 4 output channels, Relu fused; where its rows are not whole blocks (6
// here), the bitmask kernel on its non-zeros. One of more columns (input channels x
// kernel) than the implicit variant's offset table holds (here 16385 x 1), a 3-D one
// and a depthwise one stay nn.conv.
func.func @main(%x: tensor<1x3x8x8xf32>, %l: tensor<1x16385x4x4xf32>, %v: tensor<1x1x4x4x4xf32>, %d: tensor<1x3x8x8xf32>) -> (tensor<1x16x6x6xf32>, tensor<1x6x6x6xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4x4xf32>, tensor<1x3x8x8xf32>) {
  %bw = nn.weight "bw" dense<1.0> : tensor<16x3x3x3xf32>
  %b = nn.conv %x, %bw : (tensor<1x3x8x8xf32>, tensor<16x3x3x3xf32>) -> tensor<1x16x6x6xf32>
  %br = nn.relu %b : (tensor<1x16x6x6xf32>) -> tensor<1x16x6x6xf32>
  %w = nn.weight "w" dense<1.0> : tensor<6x3x3x3xf32>
  %y = nn.conv %x, %w : (tensor<1x3x8x8xf32>, tensor<6x3x3x3xf32>) -> tensor<1x6x6x6xf32>
  %r = nn.relu %y : (tensor<1x6x6x6xf32>) -> tensor<1x6x6x6xf32>
  %lw = nn.weight "lw" dense<1.0> : tensor<2x16385x1x1xf32>
  %ly = nn.conv %l, %lw : (tensor<1x16385x4x4xf32>, tensor<2x16385x1x1xf32>) -> tensor<1x2x4x4xf32>
  %vw = nn.weight "vw" dense<1.0> : tensor<2x1x1x1x1xf32>
  %vy = nn.conv %v, %vw : (tensor<1x1x4x4x4xf32>, tensor<2x1x1x1x1xf32>) -> tensor<1x2x4x4x4xf32>
  %dw = nn.weight "dw" dense<1.0> : tensor<3x1x3x3xf32>
  %dy = nn.conv %d, %dw {group = 3 : i64, pads = array<i64: 1, 1, 1, 1>} : (tensor<1x3x8x8xf32>, tensor<3x1x3x3xf32>) -> tensor<1x3x8x8xf32>
  func.return %br, %r, %ly, %vy, %dy : tensor<1x16x6x6xf32>, tensor<1x6x6x6xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4x4xf32>, tensor<1x3x8x8xf32>
}
// CHECK:      %br = sparse.conv %x, %bw {kernel = "spmm_block4_f32_16x27_relu", kind = "block", epilogue = "relu"}
// CHECK:      %r = sparse.conv %x, %w {kernel = "spmm_bitmask_f32_6x27_relu", kind = "bitmask", epilogue = "relu"}
// CHECK-NOT:  nn.relu
// CHECK:      %ly = nn.conv %l, %lw
// CHECK:      %vy = nn.conv %v, %vw
// CHECK:      %dy = nn.conv %d, %dw {group = 3 : i64

// -----
// A Relu of a Concat that only it reads goes to the Concat's parts: it fuses into the
// convolution only the Concat reads and is dropped on a part that cannot be negative
// (pools of a Relu's result). Where a part is neither (%x itself), it stays.
func.func @main(%x: tensor<1x8x4x4xf32>) -> (tensor<1x16x4x4xf32>, tensor<1x16x4x4xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<block 4, axis = 0, sparsity = 0.5>} dense<1.0> : tensor<8x8x1x1xf32>
  %y = nn.conv %x, %w : (tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  %r = nn.relu %x : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  %p = nn.average_pool %r {kernel_shape = array<i64: 3, 3>, pads = array<i64: 1, 1, 1, 1>} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  %q = nn.max_pool %p {kernel_shape = array<i64: 1, 1>} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
  %c = nn.concat %y, %q {axis = 1 : i64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) -> tensor<1x16x4x4xf32>
  %o = nn.relu %c : (tensor<1x16x4x4xf32>) -> tensor<1x16x4x4xf32>
  %v = nn.weight "v" {sparsity = #sparse.pattern<block 4, axis = 0, sparsity = 0.5>} dense<1.0> : tensor<8x8x1x1xf32>
  %z = nn.conv %x, %v : (tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x4x4xf32>
  %d = nn.concat %z, %x {axis = 1 : i64} : (tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32>) -> tensor<1x16x4x4xf32>
  %e = nn.relu %d : (tensor<1x16x4x4xf32>) -> tensor<1x16x4x4xf32>
  func.return %o, %e : tensor<1x16x4x4xf32>, tensor<1x16x4x4xf32>
}
// CHECK:      %r = nn.relu %x
// CHECK:      %y = sparse.conv %x, %w {kernel = "spmm_block4_f16_8x8_relu", kind = "block", epilogue = "relu"}
// CHECK-NEXT: %o = nn.concat %y, %q {axis = 1 : i64}
// CHECK:      %z = sparse.conv %x, %v {kernel = "spmm_block4_f16_8x8", kind = "block", epilogue = "none"}
// CHECK-NEXT: %d = nn.concat %z, %x {axis = 1 : i64}
// CHECK-NEXT: %e = nn.relu %d

// -----
// GPT-2's Conv1D: the product (with its bias) reshaped back to (batch, sequence,
// width) before the GELU (tanh's approximation): the GELU moves before the reshape and
// fuses. A GELU after a reshape that something else reads too, or of something that is
// no product, stays.
func.func @main(%x: tensor<?x?x8xf32>) -> (tensor<?x?x2xf32>, tensor<?x?x2xf32>, tensor<?x?x2xf32>) {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0]]> : tensor<2x8xf32>
  %b = nn.weight "b" dense<[0.5, -0.5]> : tensor<2xf32>
  %shape = nn.weight "shape" dense<[1, -1, 2]> : tensor<3xi64>
  %flat = nn.reshape %x {shape = array<i64: -1, 8>} : (tensor<?x?x8xf32>) -> tensor<?x8xf32>
  %y = nn.gemm %flat, %w, %b {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>, tensor<2xf32>) -> tensor<?x2xf32>
  %back = nn.dynamic_reshape %y, %shape : (tensor<?x2xf32>, tensor<3xi64>) -> tensor<?x?x2xf32>
  %g = nn.gelu %back {approximate = "tanh"} : (tensor<?x?x2xf32>) -> tensor<?x?x2xf32>
  %v = nn.weight "v" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0]]> : tensor<2x8xf32>
  %u = nn.gemm %flat, %v {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  %seen = nn.dynamic_reshape %u, %shape : (tensor<?x2xf32>, tensor<3xi64>) -> tensor<?x?x2xf32>
  %h = nn.gelu %seen {approximate = "tanh"} : (tensor<?x?x2xf32>) -> tensor<?x?x2xf32>
  %s = nn.add %seen, %h : (tensor<?x?x2xf32>, tensor<?x?x2xf32>) -> tensor<?x?x2xf32>
  %plain = nn.reshape %flat {shape = array<i64: 0, -1, 2>} : (tensor<?x8xf32>) -> tensor<?x?x2xf32>
  %k = nn.gelu %plain : (tensor<?x?x2xf32>) -> tensor<?x?x2xf32>
  func.return %g, %s, %k : tensor<?x?x2xf32>, tensor<?x?x2xf32>, tensor<?x?x2xf32>
}
// CHECK:      %g = sparse.matmul %flat, %w, %b {kernel = "spmm_bitmask_f16_2x8_bias_gelu_tanh", kind = "bitmask", epilogue = "bias_gelu_tanh", transposed = 0 : i64}
// CHECK-NEXT: %back = nn.dynamic_reshape %g, %shape
// CHECK:      %u = sparse.matmul %flat, %v {{.*}} epilogue = "none"
// CHECK-NEXT: %seen = nn.dynamic_reshape %u, %shape
// CHECK-NEXT: %h = nn.gelu %seen {approximate = "tanh"}
// CHECK:      %k = nn.gelu %plain
// CHECK-NEXT: func.return %back, %s, %k

// -----
// A Relu after a transpose of the product (a head split's) moves before the transpose
// and fuses, as after a reshape.
func.func @main(%x: tensor<?x8xf32>) -> tensor<2x?xf32> {
  %w = nn.weight "w" {sparsity = #sparse.pattern<unstructured, sparsity = 0.5>} dense<[[1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0]]> : tensor<2x8xf32>
  %y = nn.gemm %x, %w {trans_b = 1 : i64} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  %t = nn.transpose %y {perm = array<i64: 1, 0>} : (tensor<?x2xf32>) -> tensor<2x?xf32>
  %r = nn.relu %t : (tensor<2x?xf32>) -> tensor<2x?xf32>
  func.return %r : tensor<2x?xf32>
}
// CHECK:      %r = sparse.matmul %x, %w {kernel = "spmm_bitmask_f16_2x8_relu", kind = "bitmask", epilogue = "relu", transposed = 0 : i64}
// CHECK-NEXT: %t = nn.transpose %r {perm = array<i64: 1, 0>}
// CHECK-NEXT: func.return %t

// fuse-gelu: x * 0.5 * (1 + erf(x / sqrt(2))), as exporters write GELU before opset 20,
// becomes one nn.gelu, and GPT-2's tanh approximation one nn.gelu {approximate = "tanh"};
// the constants they read leave the module.
// RUN: sparsec opt %s --split-input-file -p fuse-gelu | filecheck %s
// RUN: not sparsec opt %s -p 'fuse-gelu{exact=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// OPTION: sparsec: error: pass 'fuse-gelu' has no option 'exact' (options: none)

// PyTorch's export of nn.GELU(): Div, Erf, Add, Mul by x, Mul by 0.5.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %sqrt2 = nn.weight "sqrt2" dense<1.41421354> : tensor<f32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %d = nn.div %x, %sqrt2 : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e = nn.erf %d : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a = nn.add %e, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %m = nn.mul %x, %a : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %y = nn.mul %m, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
// CHECK-NEXT:   %y = nn.gelu %x : (tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT:   func.return %y : tensor<?x8xf32>
// CHECK-NEXT: }

// -----
// BERT's 0.5 * x * (1 + erf(x * (1 / sqrt(2)))), operands in the other order; the
// constants keep a user after the fusion stay.
func.func @main(%x: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<f32>) {
  %inv = nn.weight "inv_sqrt2" dense<0.707106769> : tensor<1xf32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %h = nn.mul %half, %x : (tensor<f32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %d = nn.mul %inv, %x : (tensor<1xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %e = nn.erf %d : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %a = nn.add %one, %e : (tensor<f32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y = nn.mul %h, %a : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y, %one : tensor<2x8xf32>, tensor<f32>
}
// CHECK:      func.func @main(%x: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<f32>) {
// CHECK-NEXT:   %one = nn.weight "one" dense<1.0> : tensor<f32>
// CHECK-NEXT:   %y = nn.gelu %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:   func.return %y, %one : tensor<2x8xf32>, tensor<f32>

// -----
// x * ((1 + erf(x / sqrt(2))) * 0.5), sqrt(2) written to five places.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %sqrt2 = nn.weight "sqrt2" dense<1.41421> : tensor<f32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %d = nn.div %x, %sqrt2 : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e = nn.erf %d : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a = nn.add %e, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %s = nn.mul %a, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %y = nn.mul %x, %s : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
// CHECK-NEXT:   %y = nn.gelu %x : (tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT:   func.return %y : tensor<?x8xf32>

// -----
// Not fused: a constant that is not the GELU's (x / 2), an intermediate read twice (%e2
// is returned), and a scale of more than one value.
func.func @main(%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %sqrt2 = nn.weight "sqrt2" dense<1.41421354> : tensor<f32>
  %sqrt2s = nn.weight "sqrt2s" dense<1.41421354> : tensor<8xf32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %d1 = nn.div %x, %two : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e1 = nn.erf %d1 : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a1 = nn.add %e1, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %m1 = nn.mul %x, %a1 : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %y1 = nn.mul %m1, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %d2 = nn.div %x, %sqrt2 : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e2 = nn.erf %d2 : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a2 = nn.add %e2, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %m2 = nn.mul %x, %a2 : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %y2 = nn.mul %m2, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %d3 = nn.div %x, %sqrt2s : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  %e3 = nn.erf %d3 : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a3 = nn.add %e3, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %m3 = nn.mul %x, %a3 : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %y3 = nn.mul %m3, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  func.return %y1, %y2, %e2, %y3 : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.gelu
// CHECK:     %y1 = nn.mul %m1, %half
// CHECK:     %y2 = nn.mul %m2, %half
// CHECK:     %y3 = nn.mul %m3, %half
// CHECK-NOT: nn.gelu

// -----
// GPT-2's GELU: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3))), the
// constants as PyTorch writes them in float32.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %three = nn.weight "three" dense<3.0> : tensor<f32>
  %k = nn.weight "k" dense<0.0447149985> : tensor<f32>
  %scale = nn.weight "scale" dense<0.797884583> : tensor<f32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %h = nn.mul %x, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %p = nn.pow %x, %three : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %c = nn.mul %p, %k : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %u = nn.add %x, %c : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %d = nn.mul %u, %scale : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e = nn.tanh %d : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a = nn.add %e, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %y = nn.mul %h, %a : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
// CHECK:      func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
// CHECK-NEXT:   %y = nn.gelu %x {approximate = "tanh"} : (tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT:   func.return %y : tensor<?x8xf32>
// CHECK-NEXT: }

// -----
// A Tanh of x + 0.044715 x ** 2 is not GELU's: left alone.
func.func @main(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %half = nn.weight "half" dense<0.5> : tensor<f32>
  %two = nn.weight "two" dense<2.0> : tensor<f32>
  %k = nn.weight "k" dense<0.0447149985> : tensor<f32>
  %scale = nn.weight "scale" dense<0.797884583> : tensor<f32>
  %one = nn.weight "one" dense<1.0> : tensor<f32>
  %h = nn.mul %x, %half : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %p = nn.pow %x, %two : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %c = nn.mul %p, %k : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %u = nn.add %x, %c : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  %d = nn.mul %u, %scale : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %e = nn.tanh %d : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %a = nn.add %e, %one : (tensor<?x8xf32>, tensor<f32>) -> tensor<?x8xf32>
  %y = nn.mul %h, %a : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>
  func.return %y : tensor<?x8xf32>
}
// CHECK:     func.func @main
// CHECK-NOT: nn.gelu
// CHECK:     %e = nn.tanh %d

"""LLVM code generation for sparse kernels (xDSL llvm dialect -> llvmlite)."""

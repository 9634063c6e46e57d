"""Execution of compiled models: LLVM code generation, JIT and the executor."""

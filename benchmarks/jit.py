"""JIT benchmark: how long one kernel takes to generate and compile (cold), and to load
from the disk cache, for the kernels of a 4096x4096 layer (and of the MLP block's first
n:m layer, 3072x768 with bias and Gelu), five implicit convolutions' (keyed with their
calls' lanes, as the executor keys them: ResNet50's 3x3 convolution at 56 x 56 at blocks
of 4 needs all three lane tiles, the most code of any, its 1x1 one the widest alone;
the same 3x3 one at blocks of 16, in slices of 4 rows; an n:m 3x3 one that loads its
taps from whole lines)
and the plane copy, pooling (windowed and whole-image), depthwise convolution,
Softmax, RMS normalization, transposing copy (a LLaMA's 128 rows of 576, out and
adding a residual), attention and rotary embedding kernels.

    python benchmarks/jit.py [--repeats 5]

Cold is everything a first run pays: building the kernel in xDSL's llvm dialect,
translating it to LLVM IR, optimizing and compiling it with llvmlite; cached is a
second `compile_kernels` for the same key with the object file on disk. Each uses its
own empty cache directory, so nothing from earlier runs is reused. The repeats go in
rounds over all the kernels, so the host's load moves every kernel's median alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np

from sparsec.kernels import AnyKey, AttentionKey, KernelKey, NormKey, PlaneKey, PoolKey, RotaryKey, TransposeKey
from sparsec.runtime.jit import Target, compile_kernels

KEYS: dict[str, AnyKey] = {
    "bitmask": KernelKey("bitmask", 4096, 4096),
    "bitmask, bias + Gelu": KernelKey("bitmask", 4096, 4096, epilogue="bias_gelu"),
    "nm 3:4": KernelKey("nm", 4096, 4096, n=3, m=4),
    "nm 3:4, bias + Gelu": KernelKey("nm", 4096, 4096, n=3, m=4, epilogue="bias_gelu"),
    "nm 3:4 3072x768, bias + Gelu": KernelKey("nm", 3072, 768, n=3, m=4, epilogue="bias_gelu"),
    "block 16": KernelKey("block", 4096, 4096, block=16),
    "dense": KernelKey("dense", 4096, 4096),
    "bitmask batched": KernelKey("bitmask", 4096, 4096, batched=True),
    "bitmask batched, bias + Gelu": KernelKey("bitmask", 4096, 4096, epilogue="bias_gelu", batched=True),
    "nm 3:4 batched": KernelKey("nm", 4096, 4096, n=3, m=4, batched=True),
    "block 4 batched": KernelKey("block", 4096, 4096, block=4, batched=True),
    "block 8 batched, bias + Gelu": KernelKey("block", 4096, 4096, block=8, epilogue="bias_gelu", batched=True),
    "bitmask panelled": KernelKey("bitmask", 4096, 4096, panelled=True),
    "nm 3:4 panelled": KernelKey("nm", 4096, 4096, n=3, m=4, panelled=True),
    "nm 3:4 paired": KernelKey("nm", 4096, 4096, n=3, m=4, paired=True),
    "nm 3:4 3072x768 paired, bias + Gelu": KernelKey("nm", 3072, 768, n=3, m=4, epilogue="bias_gelu", paired=True),
    "nm 3:4 panelled and paired": KernelKey("nm", 4096, 4096, n=3, m=4, panelled=True, paired=True),
    "nm 3:4 tiles of 4 (planes)": KernelKey("nm", 4096, 4096, n=3, m=4, group_tiles=4),
    "nm 3:4 3072x768 tiles of 4 (planes), bias + Gelu": KernelKey("nm", 3072, 768, n=3, m=4, epilogue="bias_gelu", group_tiles=4),
    "nm 3:4 3072x768 tiles of 2 (planes), bias + Gelu": KernelKey("nm", 3072, 768, n=3, m=4, epilogue="bias_gelu", group_tiles=2),
    "nm 7:8 tiles of 2 (planes), bias + Gelu": KernelKey("nm", 4096, 4096, n=7, m=8, epilogue="bias_gelu", group_tiles=2),
    "nm 2:4 tiles of 4 (windows), bias + Gelu": KernelKey("nm", 4096, 4096, n=2, m=4, epilogue="bias_gelu", group_tiles=4),
    "bitmask paired": KernelKey("bitmask", 4096, 4096, paired=True),
    "bitmask panelled and paired, bias + Gelu": KernelKey("bitmask", 4096, 4096, epilogue="bias_gelu", panelled=True, paired=True),
    "dense paired": KernelKey("dense", 4096, 4096, paired=True),
    "bitmask chunks64 (window)": KernelKey("bitmask", 4096, 4096, chunk_span=64),
    "bitmask chunks128 (wide window)": KernelKey("bitmask", 4096, 4096, chunk_span=128),
    "bitmask chunks256 (gather)": KernelKey("bitmask", 4096, 4096, chunk_span=256),
    "bitmask implicit 3x3 conv, bias + Relu": KernelKey("bitmask", 256, 2304, epilogue="bias_relu", batched=True, window=(9, 3, 16 * 16, 16, 1, 1, 1, 1), lanes=14 * 16),
    "nm 3:4 implicit 3x3 conv, stride 2": KernelKey("nm", 512, 4608, n=3, m=4, run_major=True, batched=True, window=(9, 3, 15 * 15, 15, 1, 1, 2, 2), lanes=224),
    "nm 3:4 implicit 3x3 conv at 28 x 28 (taps from whole lines), bias + Relu": KernelKey("nm", 128, 1152, n=3, m=4, epilogue="bias_relu", run_major=True, batched=True, window=(9, 3, 960, 32, 1, 1, 1, 1), lanes=28 * 32),
    "block 4 implicit 3x3 conv at 56 x 56, bias + Relu": KernelKey("block", 64, 576, block=4, epilogue="bias_relu", batched=True, window=(9, 3, 3376, 58, 1, 1, 1, 1), lanes=56 * 58),
    "block 4 implicit 1x1 conv at 56 x 56, bias + Relu": KernelKey("block", 64, 64, block=4, epilogue="bias_relu", batched=True, window=(1, 1, 3136, 56, 1, 1, 1, 1), lanes=56 * 56),
    "block 16 implicit 3x3 conv at 56 x 56 (slices of 4 rows), bias + Relu": KernelKey("block", 64, 576, block=16, epilogue="bias_relu", batched=True, window=(9, 3, 3376, 58, 1, 1, 1, 1), lanes=56 * 58),
    "plane copy": PlaneKey(),
    "plane copy, normalization + Relu": PlaneKey("affine_relu"),
    "max pool 3x3, stride 2": PoolKey("max", 2, (3, 3)),
    "average pool 3x3 (flat runs)": PoolKey("avg", 1, (3, 3), flat=True),
    "global average pool 13x13": PoolKey("avg", 1, (13, 13), whole=True),
    "softmax of 1000": NormKey(1000, "softmax"),
    "depthwise convolution 3x3, stride 2, bias": PoolKey("depthwise", 2, (3, 3), bias=True),
    "depthwise convolution 3x3, bias (flat runs)": PoolKey("depthwise", 1, (3, 3), bias=True, flat=True),
    "RMS normalization of 576": NormKey(576, "rms"),
    "transposing copy in, 576": TransposeKey(576, 576, True),
    "transposing copy out, 576, adding": TransposeKey(576, 576, False, "add"),
    "attention, 64 and 64, masked": AttentionKey(64, 64, True),
    "rotary embedding of 64": RotaryKey(64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    target = Target.host()
    print(f"# LLVM CPU {target.cpu}")
    print("| kernel | cold ms (median) | cached ms (median) |")
    print("|---|---|---|")
    keys = {label: host_key(key, target) for label, key in KEYS.items()}
    cold: dict[str, list[float]] = {label: [] for label in keys}
    cached: dict[str, list[float]] = {label: [] for label in keys}
    for _ in range(args.repeats):  # in rounds over every kernel, so a busy minute of the host weighs on all alike
        for label, key in keys.items():
            with tempfile.TemporaryDirectory() as cache:
                os.environ["SPARSEC_CACHE_DIR"] = cache
                start = time.perf_counter()
                compile_kernels([key], target)
                cold[label].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert compile_kernels([key], target).from_cache
                cached[label].append(time.perf_counter() - start)
    for label in keys:
        print(f"| {label} | {np.median(cold[label]) * 1000:.1f} | {np.median(cached[label]) * 1000:.2f} |")
    under = sum(np.median(times) < 0.050 for times in cold.values())
    print(f"\n{under} of {len(keys)} kernels under 50 ms cold (median)")


def host_key(key: AnyKey, target: Target) -> AnyKey:
    """`key` as the executor keys it for `target` (runtime/executor.py: key_for)."""
    if isinstance(key, KernelKey):
        return dataclasses.replace(key, native_f16=target.native_f16, avx512=target.avx512, vbmi2=target.vbmi2, tuning=target.tuning)
    return key


if __name__ == "__main__":
    main()

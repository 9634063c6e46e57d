"""Run an artifact through both engines and print whether they agree (rtol 1e-3, atol 1e-4)."""

import sys

import numpy as np

import sparsec

path, *inputs = sys.argv[1:]
reference = sparsec.load(path, engine="reference")
for file in inputs:
    x = np.load(file)
    expected = reference.run({"x": x})["out"]
    for threads in (1, 2):
        got = sparsec.load(path, threads=threads).run({"x": x})["out"]
        ok = np.allclose(got, expected, rtol=1e-3, atol=1e-4)
        print(f"batch {x.shape[0]} threads {threads}: {'match' if ok else 'MISMATCH ' + str(np.abs(got - expected).max())}")

"""Run a command and succeed only if it exits with the given code (for lit RUN lines).

    %expect-exit 2 sparsec import bad.onnx 2>&1 | filecheck %s

lit's internal shell has no `$?`; this keeps exit-code checks on one RUN line.
The command's output passes through, so it can still be FileChecked.
"""

import subprocess
import sys

if __name__ == "__main__":
    expected, command = int(sys.argv[1]), sys.argv[2:]
    code = subprocess.run(command).returncode
    if code != expected:
        print(f"expect_exit: '{' '.join(command)}' exited with {code}, expected {expected}", file=sys.stderr)
        sys.exit(1)

"""Writers from sparsec IR to other model formats."""

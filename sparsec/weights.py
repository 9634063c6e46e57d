"""The weight store: the bytes behind every `nn.weight` op.

Weights never live in the IR itself. An `nn.weight` op names a tensor, and the store
maps that name to a numpy array. Arrays are treated as immutable: a pass that changes
a weight stores a new array under the same name, so arrays that are memory-mapped from
an input file are never written to and the input stays untouched.

The store travels with the module inside `SparsecContext`, which every pass receives.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from sparsec.errors import WeightStoreError


@dataclass
class WeightStore:
    """Named numpy arrays, keyed by the names that `nn.weight` ops refer to."""

    _arrays: dict[str, np.ndarray] = field(default_factory=dict[str, np.ndarray])

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise WeightStoreError(
                f"weight '{name}' is not in the weight store "
                f"({len(self._arrays)} weights loaded)"
            ) from None

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        array.flags.writeable = False
        self._arrays[name] = array

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._arrays.items())

    def pop(self, name: str) -> np.ndarray:
        return self._arrays.pop(name)

    def update(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            self[name] = array

    def unique_name(self, base: str) -> str:
        """A name not used yet, derived from `base`."""
        if base not in self._arrays:
            return base
        suffix = 1
        while f"{base}_{suffix}" in self._arrays:
            suffix += 1
        return f"{base}_{suffix}"

    def copy(self) -> WeightStore:
        """A new store sharing the (immutable) arrays."""
        return WeightStore(dict(self._arrays))

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._arrays.values())

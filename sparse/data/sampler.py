"""Global-batch sampling: identical on every rank, sliced by global rank.

Each epoch, every dataset's items are permuted with a generator seeded by (seed, epoch, dataset)
and cut into *global* batches of W * b items (W = world size, b = per-device batch size); the
incomplete last global batch is dropped when W > 1 or ``drop_last``. The global batches of all
datasets are then shuffled together with a generator seeded by (seed, epoch), so all ranks agree on
which dataset each step draws from, and every global batch holds one dataset only (in-batch
negatives never mix datasets). Rank r takes items [r*b, (r+1)*b) of each global batch.

A dataset with ``repeats`` n > 1 is passed over n times an epoch, each pass a permutation of its
own cut into batches of its own (no batch holds an item twice), so its share of the steps grows n
times; the first pass is the one a dataset without repeats gets.

Because the global batch does not depend on W, one process with batch W*b sees exactly the
batches that W processes with batch b see together, in the same order.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


class GlobalBatchSampler:
    """Batches of item indices: the same global batches on every rank, this rank's slice of each."""

    def __init__(self, sizes: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 42,
                 drop_last: bool = True, shuffle: bool = True, repeats: Optional[Sequence[int]] = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sizes = [int(s) for s in sizes]
        self.repeats = [int(r) for r in repeats] if repeats is not None else [1] * len(self.sizes)
        if len(self.repeats) != len(self.sizes) or min(self.repeats, default=1) < 1:
            raise ValueError("repeats: one whole number >= 1 per dataset")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.b, self.world, self.rank, self.seed = batch_size, world_size, rank, seed
        self.drop_last = drop_last or world_size > 1
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _global_batches(self) -> list[np.ndarray]:
        gb = self.b * self.world
        batches = []
        for ds_id, (size, repeats) in enumerate(zip(self.sizes, self.repeats)):
            for n in range(repeats):
                stream = [self.seed, self.epoch, ds_id] + ([n] if n else [])
                order = np.random.default_rng(stream).permutation(size) if self.shuffle else np.arange(size)
                order = order + self.offsets[ds_id]
                full = size // gb
                batches += [order[i * gb:(i + 1) * gb] for i in range(full)]
                if not self.drop_last and size % gb:
                    batches.append(order[full * gb:])
        if self.shuffle and sum(self.repeats) > 1:  # one pass over one dataset keeps its own order
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self):
        for batch in self._global_batches():
            yield batch[self.rank * self.b:(self.rank + 1) * self.b].tolist()

    def __len__(self) -> int:
        gb = self.b * self.world
        return sum(r * (s // gb + (0 if self.drop_last or s % gb == 0 else 1)) for s, r in zip(self.sizes, self.repeats))


class ConcatItems:
    """Several datasets as one flat index space (offsets in sampler order)."""

    def __init__(self, datasets: Sequence):
        self.datasets = list(datasets)
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        d = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.datasets[d][int(i - self.offsets[d])]

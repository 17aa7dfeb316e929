"""A torch Dataset over :class:`~pvqae.data.records.Sample` lists."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pvqae.data.images import load_sample
from pvqae.data.records import Sample
from pvqae.errors import DataError

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def augment_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF,
                                 int(index) & 0xFFFFFFFF, 0xA5A5])
    hi, lo = (int(x) for x in ss.generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & ((1 << 63) - 1)


class DefectDataset(Dataset):
    """Images (and masks) of ``samples``, resized to ``image_size`` x ``image_size``.

    ``__getitem__`` returns a dict:

    - ``image``: float32 ``(C, S, S)`` in [0, 1]
    - ``mask``: float32 ``(1, S, S)`` in {0, 1}, all zeros for normal images
    - ``label``: int64 (0 normal, 1 defective)
    - ``class_index``: int64, index into ``self.class_names`` (sorted)
    - ``index``: int64, position in ``samples`` (``self.samples[index]`` is the Sample)

    ``augment`` (training only): random horizontal flip and brightness/contrast jitter of
    +-``jitter`` (10 %), drawn from a torch.Generator seeded by (seed, epoch, index), so
    an epoch is reproducible whatever the DataLoader's worker count; call
    :meth:`set_epoch` at the start of each epoch. ``cache=True`` keeps the decoded, resized
    arrays in memory (uint8 where exact), as the datasets are small.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, channels: int = 3,
                 class_names: Sequence[str] | None = None, augment: bool = False,
                 seed: int = 0, *, cache: bool = False, hflip: bool = True,
                 jitter: float = 0.1, resample: str = "bicubic") -> None:
        self.samples = list(samples)
        if not self.samples:
            raise DataError("the dataset has no samples; check data.source and data.classes "
                            "in params.yaml")
        present = sorted({s.cls for s in self.samples})
        if class_names is None:
            self.class_names = present
        else:
            if isinstance(class_names, str):
                class_names = [class_names]
            self.class_names = sorted(set(class_names))
            missing = [c for c in present if c not in self.class_names]
            if missing:
                raise DataError(f"samples of class(es) {missing} are not in class_names="
                                f"{self.class_names}; pass every class of the samples")
        self._class_index = {c: i for i, c in enumerate(self.class_names)}
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.hflip = bool(hflip)
        self.jitter = float(jitter)
        if not 0.0 <= self.jitter < 1.0:
            raise DataError(f"jitter must be in [0, 1), got {jitter}")
        self.resample = resample
        self.cache = bool(cache)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without ``augment``)."""
        self.epoch = int(epoch)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(index)
        if hit is not None:
            img, mask = hit
            if img.dtype == np.uint8:
                img = img.astype(np.float32) / 255.0
            return img, mask
        img, mask = load_sample(self.samples[index], self.image_size, self.channels,
                                self.resample)
        if self.cache:
            q = np.round(img * 255.0)
            exact = np.abs(q / 255.0 - img).max() < 1e-6
            self._cache[index] = (q.astype(np.uint8) if exact else img, mask)
        return img, mask

    def _augment(self, image: torch.Tensor, mask: torch.Tensor, index: int):
        g = torch.Generator().manual_seed(augment_seed(self.seed, self.epoch, index))
        u = torch.rand(3, generator=g, dtype=torch.float64)
        if self.hflip and u[0] < 0.5:
            image = image.flip(-1)
            mask = mask.flip(-1)
        if self.jitter > 0:
            b = 1.0 + (2.0 * float(u[1]) - 1.0) * self.jitter
            c = 1.0 + (2.0 * float(u[2]) - 1.0) * self.jitter
            image = (image * b).clamp(0.0, 1.0)
            grey = (image * _LUMA.view(3, 1, 1)).sum(0) if image.shape[0] == 3 else image[0]
            mean = grey.mean()
            image = ((image - mean) * c + mean).clamp(0.0, 1.0)
        return image.contiguous(), mask.contiguous()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = self.samples[index]
        img, mask = self._arrays(index)
        image = torch.from_numpy(np.array(img, dtype=np.float32, copy=True))
        m = torch.from_numpy(mask.astype(np.float32))[None]
        if self.augment:
            image, m = self._augment(image, m, index)
        return {
            "image": image,
            "mask": m,
            "label": torch.tensor(s.label, dtype=torch.int64),
            "class_index": torch.tensor(self._class_index[s.cls], dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

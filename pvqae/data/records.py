"""One image of a defect-detection dataset, as the readers find it on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvqae.errors import DataError

SPLITS = ("train", "test")
NORMAL = "good"


@dataclass(frozen=True)
class Sample:
    """One image and (optionally) its ground-truth mask.

    path:       the image file (absolute).
    cls:        the object/texture class, e.g. ``"bottle"`` or ``"mtsd"``.
    split:      ``"train"`` or ``"test"``.
    label:      0 normal, 1 defective (image level; a defective image may have an empty mask,
                as 4 MT_Uneven images of MTSD do).
    defect:     ``"good"`` for normal images, else the defect kind (``"crack"``, ``"ko"``...).
    mask_path:  the pixel mask; None only for normal images without a mask file.
    mask_threshold: None when the mask file must be strictly binary ({0,255} or {0,1});
                an int t (0..255) when the source ships grey-level (anti-aliased) masks that
                are binarised as ``value >= t`` (MTSD: 128).
    """

    path: Path
    cls: str
    split: str
    label: int
    defect: str
    mask_path: Path | None
    mask_threshold: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise DataError(f"Sample.split must be one of {SPLITS}, got {self.split!r}")
        if self.label not in (0, 1):
            raise DataError(f"Sample.label must be 0 or 1, got {self.label!r}")
        if self.label == 1 and self.mask_path is None:
            raise DataError(f"defective Sample {self.path} needs a mask_path")

    @property
    def name(self) -> str:
        """A short, unique-within-class name: ``<split>/<defect>/<file name>``."""
        return f"{self.split}/{self.defect}/{Path(self.path).name}"


def sort_key(s: Sample) -> tuple:
    """Deterministic order: class, train before test, normal before defective, kind, name."""
    return (s.cls, SPLITS.index(s.split), s.label, s.defect, Path(s.path).name)

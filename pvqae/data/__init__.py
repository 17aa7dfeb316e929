"""Data layer: readers of the original dataset layouts, image/mask decoding and checks, and
the synthetic default dataset. (The pipeline's ``prepare`` stage resizes everything once into
``reports/prepared/arrays.npz``; training reads that, see ``pvqae.pipeline``.)

    samples = read_dataset("mtsd", "../shared/data/MTSD",
                           train_list="../shared/data/MTSD/differnet_mtd_train_filenames.txt")
    validate_samples(samples)                     # one DataError listing every problem
    image, mask = load_sample(samples[0], 256)      # (3, 256, 256) float in [0, 1], (256, 256) bool
"""

from pvqae.data.images import (
    check_sample,
    image_size_hw,
    load_image,
    load_mask,
    load_sample,
    validate_samples,
)
from pvqae.data.readers import (
    IMAGE_EXTS,
    KINDS,
    MTSD_MASK_THRESHOLD,
    parse_name_list,
    read_btad,
    read_dataset,
    read_mtsd,
    read_mvtec,
    summarize,
)
from pvqae.data.records import NORMAL, Sample
from pvqae.data.synthetic import (
    CLASSES as SYNTHETIC_CLASSES,
)
from pvqae.data.synthetic import (
    DEFECTS as SYNTHETIC_DEFECTS,
)
from pvqae.data.synthetic import (
    generate_synthetic,
    render_sample,
    write_synthetic_readme,
)

__all__ = [
    "IMAGE_EXTS",
    "KINDS",
    "MTSD_MASK_THRESHOLD",
    "NORMAL",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_DEFECTS",
    "Sample",
    "check_sample",
    "generate_synthetic",
    "image_size_hw",
    "load_image",
    "load_mask",
    "load_sample",
    "parse_name_list",
    "read_btad",
    "read_dataset",
    "read_mtsd",
    "read_mvtec",
    "render_sample",
    "summarize",
    "validate_samples",
    "write_synthetic_readme",
]

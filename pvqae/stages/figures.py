"""Stage ``figures``: the qualitative figures' content (Fig. 4 defect panels; level maps of
normal test images per class) from the first training seed's score files."""

from __future__ import annotations

import numpy as np

from pvqae.data.prepared import load_prepared
from pvqae.evaluation import defect_samples
from pvqae.settings import Params
from pvqae.stages import PATHS, Stage, out_path, seed_dir

STAGE = Stage("figures", "09_qualitative.py", params=("seed", "seeds", "figures"),
              deps=("pvqae/evaluation.py", "pvqae/plots.py", PATHS["prepared"], PATHS["scores"]),
              outs=(f"{PATHS['figures']}/qualitative",))


def run(cfg: Params, paths: dict = PATHS, progress: bool = True) -> dict:
    """``defect_rows`` (one dict per Fig. 4 row) and ``normal`` (images, routed and prior
    levels, titles of up to ``samples_per_class`` normal test images per class)."""
    n = cfg.figures.samples_per_class
    test = load_prepared(paths["prepared"], "test")
    first = seed_dir(out_path(paths, "scores"), cfg.seeds[0])
    pv, st = np.load(first / "pvqae.npz"), np.load(first / "static_vq.npz")
    ci, lab = test["class_index"].numpy(), test["label"].numpy()
    rows = []
    for k, cls in enumerate(test["classes"]):
        for i in defect_samples(test, k, n):
            rows.append({"image": test["image"][i].numpy(), "mask": test["mask"][i].numpy(),
                         "static": st["maps"][i].astype(np.float32), "pvqae": pv["maps"][i].astype(np.float32),
                         "routed": pv["routed"][i], "prior": pv["prior"][i] if "prior" in pv else None,
                         "title": f"{cls}/{test['meta'][i]['defect']}"})
    pick = np.concatenate([np.nonzero((ci == k) & (lab == 0))[0][:n] for k in range(len(test["classes"]))])
    normal = {"images": test["image"][pick].numpy(), "routed": pv["routed"][pick],
              "prior": pv["prior"][pick] if "prior" in pv else None,
              "titles": [test["classes"][ci[i]] for i in pick]}
    return {"defect_rows": rows, "normal": normal}

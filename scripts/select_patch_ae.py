"""Patch AE: fine-tune the backbone or not, chosen on the label-free validation split
(synthetic defects on held-out normal images, ``prepared.load_validation``); no test label is
read. Run from a checkout whose ``reports/prepared`` holds the dataset (after ``dvc repro
prepare`` with its profile): ``python scripts/select_patch_ae.py OUT.json``. Writes the
candidates, their validation figures and the choice."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pvqae.backbones import load_backbone
from pvqae.baselines import harness
from pvqae.batches import train_stream
from pvqae.config import load_params
from pvqae.data.prepared import load_prepared, load_validation
from pvqae.evaluation import evaluate_scores
from pvqae.records import write_json
from pvqae.settings import Params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path, help="the selection record (JSON)")
    args = ap.parse_args()
    cfg = Params.from_dict(load_params())
    bp, ev = cfg.baselines, cfg.evaluate
    train = load_prepared("reports/prepared", "train")
    val = load_validation("reports/prepared")
    backbone, _ = load_backbone(bp.backbone, bp.backbone_weights, bp.download_weights)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for finetune in (True, False):
            cand = bp.replace(patch_ae=bp.patch_ae.replace(finetune_backbone=finetune))
            model = harness.build("patch_ae", cand, cfg.data, 0, backbone)
            t0 = time.time()
            stream = train_stream(train, model.cfg.batch_size, 0, model.cfg.augment_jitter)
            harness.train_patch_ae(model, train["image"], stream, Path(tmp) / f"ft{finetune}", "patch_ae", 0,
                                   progress=False)
            scores = harness.score_split(model.eval(), val, ev.score, ev.batch_size, progress=False)
            res = evaluate_scores(val, scores, ev.fpr_limit)["mean"]
            rows.append({"finetune_backbone": finetune, "seconds": time.time() - t0,
                         "validation": {k: res[k] for k in ("image_auroc", "pixel_auroc", "aupro")}})
            print(rows[-1], flush=True)
    best = max(rows, key=lambda r: (r["validation"]["image_auroc"], r["validation"]["pixel_auroc"]))
    manifest = json.loads(Path("reports/prepared/manifest.json").read_text())
    write_json({"selection": "baselines.patch_ae.finetune_backbone",
                "split": "label-free validation (synthetic defects on held-out normals)",
                "dataset": manifest["dataset"], "classes": val["classes"],
                "n_validation": {"normal": int((val["label"] == 0).sum()), "defective": int((val["label"] == 1).sum())},
                "rule": "highest validation image AUROC, then pixel AUROC", "candidates": rows,
                "chosen": best["finetune_backbone"], "steps": bp.patch_ae.steps, "image_size": cfg.data.image_size},
               args.out)
    print("chosen", best["finetune_backbone"])


if __name__ == "__main__":
    main()

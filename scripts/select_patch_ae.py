"""Patch AE: fine-tune the backbone or not, chosen on the label-free validation split
(synthetic defects on held-out normal images, ``pipeline.load_validation``); no test label is
read. Run from a checkout whose ``reports/prepared`` holds the dataset (after ``dvc repro
prepare`` with its profile): ``python scripts/select_patch_ae.py OUT.json``. Writes the
candidates, their validation figures and the choice."""
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
import torch
from pathlib import Path
import pvqae.train as T
from pvqae import pipeline
from pvqae.backbones import load_backbone
from pvqae.baselines import harness
from pvqae.config import load_params
from pvqae.scoring import ScoreConfig
T.RESUME_ROOT = Path('/tmp/sel_resume')
params = load_params(); bp = params['baselines']; ev = params['evaluate']
train = pipeline.load_prepared('reports/prepared', 'train')
val = pipeline.load_validation('reports/prepared')
bb = load_backbone(bp['backbone'])[0]
rows = []
for ft in (True, False):
    bpc = copy.deepcopy(bp); bpc['patch_ae']['finetune_backbone'] = ft
    model = harness.build('patch_ae', bpc, params['data'], 0, bb)
    t0 = time.time()
    stream = pipeline.train_stream(train, model.cfg.batch_size, 0, model.cfg.augment_jitter)
    harness.train_patch_ae(model, train['image'], stream, Path(f'/tmp/sel_out/ft{ft}'), 'patch_ae', 0, progress=False)
    sc = harness.score_split(model.eval(), val, ScoreConfig.from_dict(ev['score']), 16, progress=False)
    res = pipeline.evaluate_scores(val, sc, ev['fpr_limit'])['mean']
    rows.append({'finetune_backbone': ft, 'validation': {k: res[k] for k in ('image_auroc', 'pixel_auroc', 'aupro')},
                 'seconds': time.time() - t0})
    print(rows[-1], flush=True)
best = max(rows, key=lambda r: (r['validation']['image_auroc'], r['validation']['pixel_auroc']))
out = {'selection': 'baselines.patch_ae.finetune_backbone', 'split': 'label-free validation (synthetic defects on held-out normals)',
       'dataset': json.load(open('reports/prepared/manifest.json'))['dataset'], 'classes': val['classes'],
       'n_validation': {'normal': int((val['label'] == 0).sum()), 'defective': int((val['label'] == 1).sum())},
       'rule': 'highest validation image AUROC, then pixel AUROC', 'candidates': rows, 'chosen': best['finetune_backbone'],
       'steps': bp['patch_ae']['steps'], 'image_size': params['data']['image_size']}
json.dump(out, open(sys.argv[1], 'w'), indent=1)
print('chosen', best['finetune_backbone'])

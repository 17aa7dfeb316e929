"""Markdown tables of the benchmark JSON files (``python -m pvqae benchmark --table``): the
speed/size and accuracy tables shown in the README, one row per ``reports/benchmarks/*.json``
record kept in git. Only the JSON files are read, so a table can be rebuilt without rerunning
a benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

from pvqae.benchmark.accuracy_record import FLOOR, dataset_tag


def accuracy_table(out_dir: Path) -> str:
    """Markdown table of every ``accuracy_*.json`` under ``out_dir``."""
    rows = ["| dataset | profile | image | input | steps (PVQAE pretrain + budget / static VQ) | seeds "
            "| PVQAE image / pixel AUROC | static VQ image / pixel | PVQAE training s (pretrain+budget+prior) "
            "| targets met | codes per normal image (PVQAE routed / static VQ) | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    kinds = ["", "Image AUROC per defect kind (each kind against the normal test images):", "",
             "| dataset | profile | method | class | image AUROC per defect kind |", "|---|---|---|---|---|"]
    base = ["", "Baselines (the baselines stage: same data, splits, size, post-processing and metrics; margin = "
            "AUROC points over the median-filter floor):", "",
            "| dataset | profile | image | method | backbone | seeds | image / pixel AUROC | AUPRO "
            "| margin over floor (image / pixel) | fit s | scoring img/s | bank / fitted MB | targets met | machine "
            "| settings (those not at the code's defaults) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("accuracy_*.json")):
        r = json.loads(p.read_text())
        if r.get("benchmark") == "accuracy_budgeted":  # time-budgeted runs: budgeted_table
            continue
        if "baselines" in r:
            base += _baseline_rows(r)
            for m, rec in r["baselines"]["methods"].items():
                for cls, v in rec.get("image_auroc_by_defect", {}).items():
                    kinds.append(f"| {dataset_tag(r)} | {r['profile']} | {m} | {cls} | "
                                 + ", ".join(f"{k} {100 * a:.1f}" for k, a in v.items()) + " |")
        if "pvqae" not in r:
            continue
        met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["met"].items())
        steps = r.get("steps") or {}
        steps = (f"{steps['pretrain']} + {steps['budget']} / {steps['static_vq']}"
                 if {"pretrain", "budget", "static_vq"} <= set(steps) else "-")
        rows.append(f"| {dataset_tag(r)} | {r['profile']} | {r['image_size']} px | {_input(r)} | {steps} | {r['seeds']} "
                    f"| {_pm(r['pvqae'], 'image_auroc')} / {_pm(r['pvqae'], 'pixel_auroc')} "
                    f"| {_pm(r['static_vq'], 'image_auroc')} / {_pm(r['static_vq'], 'pixel_auroc')} "
                    f"| {r['training_seconds']['pvqae_pretrain_budget_prior']:.0f} | {met} | {_codes(r)} "
                    f"| {r['machine']['cpu_count']} CPU{', CUDA' if r['machine']['cuda'] else ''} |")
        for m, per_class in r.get("image_auroc_by_defect", {}).items():
            for cls, v in per_class.items():
                kinds.append(f"| {dataset_tag(r)} | {r['profile']} | {m} | {cls} | "
                             + ", ".join(f"{k} {100 * a:.1f}" for k, a in v.items()) + " |")
    return "\n".join(rows + (kinds if len(kinds) > 5 else []) + (base if len(base) > 5 else [])) + "\n"


def _input(r: dict) -> str:
    """"pixels" or "PVQAE-F: <backbone> features" of an accuracy record."""
    from pvqae.backbones import backbone_label

    inp = r.get("input") or {"kind": "pixels"}
    return "pixels" if inp["kind"] == "pixels" else f"PVQAE-F: {backbone_label(inp['backbone'])} {inp['strides']}"


def _pm(rec: dict, k: str) -> str:
    """``mean ± std`` over seeds (percent) of a metric of a method's record."""
    n = rec.get("n_seeds", 1)
    return f"{100 * rec['mean'][k]:.1f}" + (f" ± {100 * rec['std'][k]:.1f}" if n > 1 else "")


def _baseline_rows(r: dict) -> list[str]:
    from pvqae.backbones import backbone_label
    from pvqae.baselines import NEEDS_BACKBONE

    b = r["baselines"]
    out = []
    for m, rec in b["methods"].items():
        mean, std = rec["mean"], rec["std"]
        spread = (lambda k: f" ± {100 * std[k]:.1f}" if rec["n_seeds"] > 1 else "")
        margin = rec.get("margin_over_floor")
        margin = "-" if m == FLOOR or not margin else (f"{100 * margin['image_auroc']:+.1f} / "
                                                       f"{100 * margin['pixel_auroc']:+.1f}")
        mb = rec.get("bank_mb", rec.get("mb"))
        met = ", ".join(f"{k.removeprefix(m + '_')} {'yes' if v else 'NO'}" for k, v in b["met"].items()
                        if k.startswith(m + "_")) or "-"
        fit = rec.get("fit_seconds")
        ips = rec.get("inference_images_per_second")
        out.append(f"| {dataset_tag(r)} | {r['profile']} | {r['image_size']} px | {m} "
                   f"| {backbone_label(b['backbone']) if m in NEEDS_BACKBONE else '-'} | {b['seeds']} "
                   f"| {100 * mean['image_auroc']:.1f}{spread('image_auroc')} / {100 * mean['pixel_auroc']:.1f}"
                   f"{spread('pixel_auroc')} | {100 * mean['aupro']:.1f} | {margin} "
                   f"| {'-' if fit is None else f'{fit:.0f}'} | {'-' if ips is None else f'{ips:.1f}'} "
                   f"| {'-' if mb is None else f'{mb:.0f}'} | {met} | {r['machine']['cpu_count']} CPU "
                   f"| {_settings(m, b.get(f'{m}_params'))} |")
    return out


LOGGING_KEYS = ("ckpt_every", "log_every")  # how a run reports, not what it measures


def _settings(method: str, params: dict | None) -> str:
    """The keys of a baseline's recorded params section that differ from its config class's
    defaults (``steps=2000, subnet=conv``): what a row was run with, beside its figures.
    ``?`` when the record kept no params for the method (older records: only some did)."""
    import dataclasses

    from pvqae.settings import BaselinesConfig

    if params is None:
        return "?"
    default = dataclasses.asdict(getattr(BaselinesConfig(), method))
    known = {k: v for k, v in params.items() if k in default}  # a key the code has since dropped is not a setting now
    cfg = dataclasses.asdict(getattr(BaselinesConfig.from_dict({method: known}), method))
    diff = [f"{k}={_short(v)}" for k, v in cfg.items() if k not in LOGGING_KEYS and v != default.get(k)]
    diff += [f"{k}={_short(v)} (a key the code no longer has)" for k, v in params.items() if k not in default]
    return ", ".join(diff) or "defaults"


def _short(v) -> str:
    return "[" + ", ".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)


def _codes(r: dict) -> str:
    c = r.get("codes_per_image") or {}
    pv, st = c.get("pvqae_routed_normal"), c.get("static_vq")
    return f"{pv:.0f} / {st}" if pv is not None and st is not None else "-"


def table(out_dir: Path) -> str:
    """Markdown table of every ``speed_size_*.json`` under ``out_dir`` (for the README)."""
    rows = ["| profile | image | inference img/s (batch) | peak RSS MB | train img/s | PVQAE + prior MB | "
            "PatchCore bank MB (full / 10 % coreset, n_train) | machine |", "|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("speed_size_*.json")):
        r = json.loads(p.read_text())
        b = r["patchcore_wrn50_bank"]
        m = r["machine"]
        rows.append(f"| {r['profile']} | {r['image_size']} px | {r['inference_images_per_second']:.1f} ({r['batch_size']}) "
                    f"| {r['inference_peak_rss_mb']:.0f} | {r['train_images_per_second']:.1f} "
                    f"| {r['model_mb'] + r['prior_mb']:.1f} | {b['full_mb']:.0f} / {b['coreset_mb']:.0f} ({b['n_train']}) "
                    f"| {m['cpu_count']} CPU, torch {m['torch'].split('+')[0]}{', CUDA' if m['cuda'] else ''} |")
    base = ["", "Feature-based baselines in the same run (inference images/s at the batch above, the backbone "
            "included; MB = what a deployment keeps beside the backbone):", "",
            "| profile | image | backbone | PatchCore img/s (MB) | PaDiM img/s (MB) | Patch AE img/s (MB) "
            "| Patch AE bank | VQ-Flow img/s (MB) | PVQAE-F img/s (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("speed_size_*.json")):
        r = json.loads(p.read_text())
        b = r.get("baselines") or {}
        if "patchcore" in b:
            cells = [f"{b[m]['inference_images_per_second']:.1f} ({b[m]['mb']:.0f})" if m in b else "-"
                     for m in ("patchcore", "padim", "patch_ae", "vq_flow", "pvqae_f")]
            pa = b.get("patch_ae", {})  # records before the bank's space was recorded say nothing of it
            cells.insert(3, f"{pa['bank_features']}, {pa['bank_dim']}-d" if "bank_features" in pa else "not recorded")
            cells = " | ".join(cells)
            base.append(f"| {r['profile']} | {r['image_size']} px | {b['backbone']} | {cells} |")
    return "\n".join(rows + (base if len(base) > 5 else [])) + "\n"


def budgeted_table(out_dir: Path) -> str:
    """Markdown tables of the time-budgeted runs (``accuracy_*.json`` with ``benchmark:
    accuracy_budgeted``, e.g. the GPU study) and of every ``scaling_*.json``."""
    rows = ["| dataset | profile | image | device | budget s per model | steps PVQAE pretrain + budget / static VQ "
            "| PVQAE image / pixel AUROC | static VQ image / pixel | train steps/s (pretrain) | peak GPU MB "
            "| full schedule, hours (extrapolated) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("accuracy_*.json")):
        r = json.loads(p.read_text())
        if r.get("benchmark") != "accuracy_budgeted":
            continue
        pv, st = r["pvqae"], r["static_vq"]
        plan = r["plan"]
        est = (r.get("full_schedule_estimate") or {}).get("hours") or {}
        mem = r.get("peak_gpu_memory_mb")
        rate = pv["train_steps_per_second"].get("pvqae_pretrain")
        rows.append(f"| {r['dataset']} | {r['profile']} | {r['image_size']} px | {r.get('gpu') or 'CPU'} "
                    f"| {r['budgeted']['seconds']:.0f} | {plan['pvqae_pretrain']} + {plan['pvqae_budget']} / "
                    f"{plan['static_vq']} | {_pm(pv, 'image_auroc')} / {_pm(pv, 'pixel_auroc')} "
                    f"| {_pm(st, 'image_auroc')} / {_pm(st, 'pixel_auroc')} | {'-' if rate is None else f'{rate:.2f}'} "
                    f"| {'-' if mem is None else f'{mem:.0f}'} | "
                    + (f"{est['pvqae']:.2f} + {est['static_vq']:.2f}" if est else "-") + " |")
    sc = ["", "Scaling (one seed; the schedule fractions train fixed steps, the sizes get the reference fraction's "
          "wall time):", "",
          "| dataset | profile | series | image | ch | fraction of schedule | steps PVQAE pretrain + budget / static VQ "
          "| PVQAE training s | PVQAE image / pixel AUROC | static VQ image / pixel |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(Path(out_dir).glob("scaling_*.json")):
        r = json.loads(p.read_text())
        for row in r["rows"]:
            plan, pv, st = row["plan"], row["pvqae"], row["static_vq"]
            frac = "-" if row["fraction"] is None else f"{row['fraction']:g}"
            sc.append(f"| {r['dataset']} | {r['profile']} | {row['series']} | {row['image_size']} px | {row['ch']} "
                      f"| {frac} | {plan['pvqae_pretrain']} + {plan['pvqae_budget']} / {plan['static_vq']} "
                      f"| {pv['train_seconds']:.0f} | {_pm(pv, 'image_auroc')} / {_pm(pv, 'pixel_auroc')} "
                      f"| {_pm(st, 'image_auroc')} / {_pm(st, 'pixel_auroc')} |")
    return "\n".join((rows if len(rows) > 2 else []) + (sc if len(sc) > 5 else [])) + "\n"


def _routing(candidate: dict) -> str:
    """A PVQAE candidate's codes per validation image and routed level fractions; ``-`` for a baseline."""
    if candidate.get("codes_per_image") is None:
        return "-"
    fr = candidate.get("level_fractions")
    parts = "" if not fr else ", " + " / ".join("-".join(f"{100 * f:.0f}" for f in fr[k]) for k in ("normal", "defective"))
    return f"{candidate['codes_per_image']:.0f}{parts}"


def selection_table(out_dir: Path) -> str:
    """Markdown table of every ``selection_*.json`` under ``out_dir``: per record each
    candidate's validation image / pixel AUROC and AUPRO, the chosen one in bold; PVQAE's
    candidates add their codes per image and routed level fractions. A round run ``--against``
    an earlier record lists that record's choice too, marked."""
    rows = ["| dataset | image | method | round | candidate | validation image / pixel AUROC | AUPRO | seconds "
            "| codes / image, normal / defective: coarse-median-fine % |",
            "|---|---|---|---|---|---|---|---|---|"]
    records = [json.loads(p.read_text()) for p in Path(out_dir).glob("selection_*.json")]
    for r in sorted(records, key=lambda r: (dataset_tag(r), r["image_size"], r["method"], r.get("round", 1))):
        for c in r["candidates"]:
            v = c["validation"]
            setting = ", ".join(f"{k.rsplit('.', 1)[-1]}={val}" for k, val in c["setting"].items())
            if c["setting"] == r["chosen"]:
                setting = (f"**{setting}** (chosen)" if r.get("applied", True)
                           else f"{setting} (ranks first; not applied: the record's note says why)")
            if c.get("incumbent"):  # an earlier round's choice, competing with its recorded figures
                setting += f" (round {c['incumbent_round']}'s choice, not retrained)"
            sd = c.get("validation_std")  # a record of several seeds: mean +- std

            def fig(k, v=v, sd=sd):
                return f"{100 * v[k]:.1f}" + (f" ± {100 * sd[k]:.1f}" if sd else "")

            seeds = f" ({len(r['seed'])} seeds)" if isinstance(r.get("seed"), list) else ""
            rows.append(f"| {dataset_tag(r)} | {r['image_size']} px | {r['method']} | {r.get('round', 1)}{seeds} "
                        f"| {setting} | {fig('image_auroc')} / {fig('pixel_auroc')} | {fig('aupro')} "
                        f"| {c['seconds']:.0f} | {_routing(c)} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""

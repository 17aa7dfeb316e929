"""``pvqae.report``: the paper's numbers (checked against the paper's text), Table I rows,
paper-vs-ours rows with deltas, the generated claim texts, ablation rows, run times, figure
links and the assembled REPORT.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pvqae import report

PAPER_TXT = Path(__file__).resolve().parents[2] / "shared" / "papers" / "000_00156e9cd1bb267f.txt"

MVTEC = ("carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill",
         "screw", "toothbrush", "transistor", "zipper")
PAPER_METHODS = ("padim", "patchcore", "ae_ssim", "vq_e", "hvq_trans", "stpm", "cutpaste", "pvqae")  # column order


def _res(image, pixel=0.5, aupro=0.4, per_class=None, std=None, n_seeds=1) -> dict:
    """A hand-made aggregated result (:func:`pvqae.evaluation.aggregate_seeds` shape)."""
    r = {"mean": {"image_auroc": image, "pixel_auroc": pixel, "aupro": aupro}, "per_class": per_class or {},
         "n_seeds": n_seeds}
    if std is not None:
        r["std"] = std
    return r


def _pc(image, pixel, aupro=0.5) -> dict:
    return {"image_auroc": image, "pixel_auroc": pixel, "aupro": aupro}


# ----------------------------------------------------------------------------- paper numbers

def test_paper_numbers_structure_and_ablation_tables():
    p = report.paper_numbers()
    t1 = p["table1"]
    assert set(t1) == {"mvtec", "btad", "mtsd"}
    assert set(t1["mvtec"]) == set(MVTEC) and len(t1["mvtec"]) == 15
    assert set(t1["btad"]) == {"01", "02", "03"}
    assert set(t1["mtsd"]) == {"mtsd"} and t1["mtsd"]["mtsd"]["pvqae"] == [99.2, 96.5]
    for ds, classes in t1.items():
        for cls, methods in classes.items():
            assert set(methods) == set(PAPER_METHODS), (ds, cls)
            assert all(len(v) == 2 and all(0 < x <= 100 for x in v) for v in methods.values()), (ds, cls)
    assert p["table2"] == {"constant": [89.2, 87.7], "cosine": [96.3, 92.5], "linear": [96.9, 94.2]}
    assert p["table3"] == {"none": [91.5, 90.8], "universal": [96.2, 93.1], "per-class": [97.3, 95.9]}
    assert p["fig5"]["peak_lambda_max"] == 1.25
    assert report.paper_table1("btad") == t1["btad"] and report.paper_table1("synthetic") == {}
    assert report.paper_table1("folder") == {}


def _paper_text() -> str:
    if not PAPER_TXT.is_file():
        pytest.skip(f"paper text {PAPER_TXT} not present")
    return PAPER_TXT.read_text()


CELL = re.compile(r"^(\d+(?:\.\d+)?) / (\d+(?:\.\d+)?)$")
DATASETS = {"MVTecAD": "mvtec", "BTAD": "btad", "MTSD": "mtsd"}


def _parse_table1(text: str) -> dict:
    """{dataset: {class folder: {method: [image, pixel]}}} from the paper's Table I lines."""
    out: dict = {}
    dataset = None
    for line in text.splitlines():
        tokens = [t.strip() for t in line.strip().strip("|").split("|")]
        tokens = [t for t in tokens if t]
        cells = [CELL.match(t) for t in tokens]
        if sum(c is not None for c in cells) != 8:
            continue
        names = [t for t, c in zip(tokens, cells) if c is None]
        if len(names) == 2:
            dataset = DATASETS[names[0]]
        name = names[-1]
        cls = {"mtsd": lambda n: "mtsd", "btad": lambda n: f"{int(n.split()[-1]):02d}",
               "mvtec": lambda n: n.lower().replace(" ", "_")}[dataset](name)
        out.setdefault(dataset, {})[cls] = {m: [float(c.group(1)), float(c.group(2))]
                                            for m, c in zip(PAPER_METHODS, [c for c in cells if c])}
    return out


def test_table1_matches_the_paper_text():
    text = _paper_text()
    parsed = _parse_table1(text)
    ours = report.paper_numbers()["table1"]
    # the two lines named in the brief, explicitly
    magnets = next(line for line in text.splitlines() if line.startswith("| MTSD | Magnets |"))
    assert [float(x) for x in re.findall(r"\d+(?:\.\d+)?", magnets)] == [
        x for m in PAPER_METHODS for x in ours["mtsd"]["mtsd"][m]]
    bottle = next(line for line in text.splitlines() if line.startswith("| Bottle |"))
    assert [float(x) for x in re.findall(r"\d+(?:\.\d+)?", bottle)] == [
        x for m in PAPER_METHODS for x in ours["mvtec"]["bottle"][m]]
    # and every row of Table I
    assert {ds: set(v) for ds, v in parsed.items()} == {ds: set(v) for ds, v in ours.items()}
    assert parsed == ours


def test_tables2_and_3_match_the_paper_text():
    lines = _paper_text().splitlines()

    def rows(label):
        return [[float(x) for x in re.findall(r"\d+\.\d+", line)] for line in lines if line.startswith(f"| {label}")]

    img, pix = rows("Image-AUROC (mean)"), rows("Pixel-AUROC (mean)")
    assert len(img) == len(pix) == 2  # Table II, then Table III
    p = report.paper_numbers()
    for table, keys, k in (("table2", ("constant", "cosine", "linear"), 0),
                           ("table3", ("none", "universal", "per-class"), 1)):
        assert [p[table][key][0] for key in keys] == img[k], table
        assert [p[table][key][1] for key in keys] == pix[k], table


# ----------------------------------------------------------------------------- Table I (ours)

def test_table1_rows_cells_mean_row_and_status_strings():
    pv = _res(0.8, 0.9, 0.7, per_class={"a": _pc(0.781, 0.9, 0.65), "b": _pc(0.819, 0.9, 0.75)})
    rows = report.table1_rows(["a", "b"], {"pvqae": pv, "padim": "not run: no pretrained weights"})
    assert [r["class"] for r in rows] == ["a", "b", "mean"]
    assert list(rows[0]) == ["class", "PVQAE", "PaDiM"]
    assert rows[0]["PVQAE"] == "78.1 / 90.0 / 65.0"
    assert rows[1]["PVQAE"] == "81.9 / 90.0 / 75.0"
    assert rows[2]["PVQAE"] == "80.0 / 90.0 / 70.0"
    assert all(r["PaDiM"] == "not run: no pretrained weights" for r in rows)
    assert "±" not in "".join(r["PVQAE"] for r in rows)


def test_table1_rows_show_std_with_several_seeds_and_na_for_a_missing_class():
    pv = _res(0.8, 0.9, 0.7, std={"image_auroc": 0.012, "pixel_auroc": 0.0, "aupro": 0.02},
              per_class={"a": _pc(0.8, 0.9, 0.7)}, n_seeds=3)
    pv["per_class_std"] = {"a": {"image_auroc": 0.01, "pixel_auroc": 0.02, "aupro": 0.03}}
    rows = report.table1_rows(["a", "b"], {"pvqae": pv, "custom": _res(0.5, per_class={"a": _pc(0.5, 0.5)})})
    assert rows[0]["PVQAE"] == "80.0 ± 1.0 / 90.0 ± 2.0 / 70.0 ± 3.0"
    assert rows[2]["PVQAE"] == "80.0 ± 1.2 / 90.0 ± 0.0 / 70.0 ± 2.0"
    assert rows[1]["PVQAE"] == "n/a / n/a / n/a"  # class b missing from the results
    assert rows[0]["custom"] == "50.0 / 50.0 / 50.0"  # unknown methods keep their key as the label


# ----------------------------------------------------------------------------- paper vs ours

def test_paper_rows_mtsd_deltas_and_not_run():
    results = {"pvqae": _res(1.0, per_class={"mtsd": _pc(1.0, 0.942)}),
               "patchcore": "not run: no pretrained weights",
               "mine": _res(0.5, per_class={"mtsd": _pc(0.5, 0.5)})}  # no paper numbers: no rows
    rows = report.paper_rows("mtsd", ["mtsd"], results, backbone="efficientnet-lite0")
    assert len(rows) == 2  # one class: no mean row
    pv, pc = rows
    assert pv == {"class": "mtsd", "method": "PVQAE", "paper backbone": "-", "image ours": "100.0",
                  "image paper": "99.2", "image delta": "+0.8", "pixel ours": "94.2", "pixel paper": "96.5",
                  "pixel delta": "-2.3"}
    assert pc["method"] == "PatchCore (EfficientNet-Lite0)" and pc["paper backbone"] == "WRN50"
    assert pc["image paper"] == "99.2" and pc["pixel paper"] == "94.6"
    assert pc["image ours"] == pc["pixel ours"] == "not run"
    assert pc["image delta"] == pc["pixel delta"] == "n/a"


def test_paper_rows_static_vq_is_compared_with_vq_e_and_nan_has_no_delta():
    rows = report.paper_rows("mtsd", ["mtsd"], {"static_vq": _res(0.9, per_class={"mtsd": _pc(0.976, float("nan"))})})
    (r,) = rows
    assert r["method"] == "static VQ (VQ-E style)" and r["image paper"] == "96.6" and r["image delta"] == "+1.0"
    assert r["pixel paper"] == "94.2" and r["pixel delta"] == "n/a"


def test_paper_rows_empty_without_paper_numbers():
    res = {"pvqae": _res(0.9, per_class={"texture": _pc(0.9, 0.9)})}
    assert report.paper_rows("synthetic", ["texture"], res) == []
    assert report.paper_rows("mvtec", ["texture"], res) == []  # a class the paper does not have


def test_paper_rows_mvtec_mean_row_averages_the_papers_values():
    res = {"pvqae": _res(0.9, per_class={"carpet": _pc(0.90, 0.80), "grid": _pc(0.96, 0.90)})}
    rows = report.paper_rows("mvtec", ["carpet", "grid"], res)
    assert [r["class"] for r in rows] == ["carpet", "grid", "mean"]
    mean = rows[-1]
    # paper: carpet [98.4, 95.2], grid [97.6, 94.2]
    assert mean["image paper"] == "98.0" and mean["pixel paper"] == "94.7"
    assert mean["image ours"] == "93.0" and mean["pixel ours"] == "85.0"
    assert mean["image delta"] == "-5.0" and mean["pixel delta"] == "-9.7"
    assert rows[0]["image delta"] == "-8.4" and rows[1]["pixel delta"] == "-4.2"


def test_paper_rows_mean_is_na_when_a_class_is_missing_from_ours():
    res = {"pvqae": _res(0.9, per_class={"carpet": _pc(0.90, 0.80)})}
    rows = report.paper_rows("mvtec", ["carpet", "grid"], res)
    assert rows[1]["class"] == "grid" and rows[1]["image ours"] == "n/a" and rows[1]["image delta"] == "n/a"
    assert rows[2]["class"] == "mean" and rows[2]["image ours"] == "n/a" and rows[2]["image paper"] == "98.0"


# ----------------------------------------------------------------------------- claims

def test_claim_core_holds_and_counts_wins():
    pv = _res(0.9, 0.85, per_class={"a": _pc(0.95, 0.9), "b": _pc(0.85, 0.8)})
    st = _res(0.8, 0.9, per_class={"a": _pc(0.7, 0.9), "b": _pc(0.9, 0.9)})
    text = report.claim_core({"pvqae": pv, "static_vq": st}, ["a", "b"])
    img, pix = text.split("; mean pixel AUROC")
    assert "PVQAE 90.0 vs static VQ 80.0; the claim holds in this run (one training seed" in img
    assert "PVQAE 85.0 vs static VQ 90.0; the claim does not hold in this run (one training seed" in pix
    assert "one training seed: no spread estimate" in text
    assert "higher image AUROC on 1 of 2 classes" in text


def test_claim_core_with_seeds_within_and_beyond_one_std():
    pv = _res(0.82, 0.95, std={"image_auroc": 0.03, "pixel_auroc": 0.01}, n_seeds=3,
              per_class={"a": _pc(0.82, 0.95)})
    st = _res(0.80, 0.90, std={"image_auroc": 0.01, "pixel_auroc": 0.01}, n_seeds=3,
              per_class={"a": _pc(0.80, 0.90)})
    text = report.claim_core({"pvqae": pv, "static_vq": st}, ["a"])
    img, pix = text.split("; mean pixel AUROC")
    assert "holds in this run, but the difference (+2.0 points) is within one std over seeds" in img
    assert "holds in this run (difference +5.0 points, beyond one std over seeds)" in pix
    assert "one training seed" not in text and "on 1 of 1 classes" in text


def test_claim_core_not_testable_without_both_models():
    assert "not testable" in report.claim_core({"pvqae": _res(0.9), "static_vq": "not run"}, ["a"])
    assert "not testable" in report.claim_core({"pvqae": _res(0.9)}, ["a"])


def test_claim_schedule():
    holds = report.claim_schedule({"constant": _res(0.7), "cosine": _res(0.8), "linear": _res(0.9)})
    assert "linear > cosine > constant" in holds
    assert "best other (cosine): the claim holds in this run (one training seed" in holds
    fails = report.claim_schedule({"constant": _res(0.95), "cosine": _res(0.8), "linear": _res(0.9)})
    assert "constant > linear > cosine" in fails and "(constant): the claim does not hold" in fails
    close = report.claim_schedule({"cosine": _res(0.89, std={"image_auroc": 0.01}, n_seeds=3),
                                   "linear": _res(0.9, std={"image_auroc": 0.02}, n_seeds=3)})
    assert "holds in this run, but the difference (+1.0 points) is within one std" in close
    assert "not testable" in report.claim_schedule({"linear": _res(0.9)})
    assert "not testable" in report.claim_schedule({"cosine": _res(0.9), "constant": _res(0.8)})


def test_claim_sweep():
    peak = {0.5: _res(0.7), 1.25: _res(0.9), 2.0: _res(0.8)}
    text = report.claim_sweep(peak, 1.25)
    assert "Swept 0.5, 1.25, 2" in text and "peaks at 1.25 (90.0): the claim holds" in text
    assert "thinned sweep" in text
    off = report.claim_sweep({0.5: _res(0.7), 1.25: _res(0.8), 2.0: _res(0.9)}, 1.25)
    assert "peaks at 2 (90.0): the claim does not hold" in off
    # the paper's full sweep 0.5 ... 2.5 step 0.25: a neighbour of the peak still holds, two steps off not
    xs = [0.5 + 0.25 * i for i in range(9)]
    full = {x: _res(0.9 if x == 1.5 else 0.7) for x in xs}
    assert "the claim holds" in report.claim_sweep(full, 1.25) and "thinned" not in report.claim_sweep(full, 1.25)
    full = {x: _res(0.9 if x == 1.75 else 0.7) for x in xs}
    assert "the claim does not hold" in report.claim_sweep(full, 1.25)
    assert "not testable" in report.claim_sweep({1.25: _res(0.9)})


def test_claim_priors():
    good = report.claim_priors({"none": _res(0.7), "universal": _res(0.8), "per-class": _res(0.9)})
    assert "per-class > universal > none" in good and "the full ordering holds in this run (one training seed" in good
    bad = report.claim_priors({"none": _res(0.85), "universal": _res(0.8), "per-class": _res(0.9)})
    assert "per-class > none > universal" in bad and "the full ordering does not hold" in bad
    seeds = report.claim_priors({"universal": _res(0.8, std={"image_auroc": 0.05}, n_seeds=2),
                                 "per-class": _res(0.82, std={"image_auroc": 0.01}, n_seeds=2)})
    assert "holds in this run, but the difference (+2.0 points) is within one std" in seeds
    assert "not testable" in report.claim_priors({"per-class": _res(0.9)})
    # every prior the same (a routing that sends every patch to one level): a tie, not the ordering
    tie = report.claim_priors({"none": _res(0.99), "universal": _res(0.99), "per-class": _res(0.99)})
    assert "per-class = universal = none" in tie and "the full ordering does not hold" in tie
    tied = report.claim_schedule({"constant": _res(0.9), "linear": _res(0.9)})
    assert "constant = linear" in tied and "the claim does not hold" in tied


def test_claim_table1_ranks_and_lists_skipped():
    text = report.claim_table1({"pvqae": _res(0.8), "ae_ssim": _res(0.9), "padim": "not run: no pretrained weights"})
    assert "AE-SSIM 90.0, PVQAE 80.0; PVQAE is #2 of 2." in text
    assert "Not run: PaDiM (not run: no pretrained weights)." in text


# ----------------------------------------------------------------------------- ablation rows

def test_ablation_rows_delta_only_for_mvtec():
    res = {"constant": _res(0.9, 0.8, 0.7), "linear": _res(0.95, 0.9, 0.8, std={"image_auroc": 0.01,
                                                                                 "pixel_auroc": 0.02}, n_seeds=2)}
    mv = report.ablation_rows("lambda schedule", res, "table2", "mvtec")
    assert mv[0] == {"lambda schedule": "constant", "image ours": "90.0", "image paper (MVTec AD)": "89.2",
                     "image delta": "+0.8", "pixel ours": "80.0", "pixel paper (MVTec AD)": "87.7",
                     "pixel delta": "-7.7", "AUPRO ours": "70.0"}
    assert mv[1]["image ours"] == "95.0 ± 1.0" and mv[1]["image delta"] == "-1.9" and mv[1]["AUPRO ours"] == "80.0"
    syn = report.ablation_rows("lambda schedule", res, "table2", "synthetic")
    assert all("image delta" not in r and "pixel delta" not in r for r in syn)
    assert syn[0]["image paper (MVTec AD)"] == "89.2"
    other = report.ablation_rows("prior", {"none": _res(0.9), "odd": _res(0.5)}, "table3", "mvtec")
    assert other[0]["image paper (MVTec AD)"] == "91.5" and other[1]["image paper (MVTec AD)"] == "n/a"
    assert other[1]["image delta"] == "n/a"


def test_ablation_rows_method_labels_and_no_paper_table():
    rows = report.ablation_rows("method", {"static_vq": _res(0.8), "pvqae": _res(0.9), "x": _res(0.1)}, None, "mvtec")
    assert [r["method"] for r in rows] == ["static VQ (VQ-E style)", "PVQAE", "x"]
    assert set(rows[0]) == {"method", "image ours", "pixel ours", "AUPRO ours"}
    lm = report.ablation_rows("lambda_max", {"static_vq": _res(0.8)}, None, "mvtec")
    assert lm[0]["lambda_max"] == "static_vq"  # labels only for key "method"


# ----------------------------------------------------------------------------- run times, figures, report

def _ipynb(path: Path, seconds) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": [], "metadata": {"papermill": {"duration": seconds}}, "nbformat": 4}))
    return path


def test_notebook_seconds(tmp_path):
    assert report.notebook_seconds(_ipynb(tmp_path / "a.ipynb", 12.25)) == 12.25
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"metadata": {"papermill": ')
    assert report.notebook_seconds(broken) is None
    assert report.notebook_seconds(_ipynb(tmp_path / "none.ipynb", None)) is None  # killed: no duration
    (tmp_path / "plain.ipynb").write_text(json.dumps({"metadata": {}}))
    assert report.notebook_seconds(tmp_path / "plain.ipynb") is None
    assert report.notebook_seconds(tmp_path / "absent.ipynb") is None


def test_run_time_rows_sum_to_a_total(tmp_path):
    ex, var = tmp_path / "executed", tmp_path / "variants"
    _ipynb(ex / "prepare.ipynb", 1.04)
    _ipynb(ex / "pretrain.ipynb", 100.0)
    (ex / "budget.ipynb").write_text("not json")  # unreadable: left out
    _ipynb(var / "lambda_max-0.5" / "executed.ipynb", 20.5)
    rows = report.run_time_rows(ex, var, ["prepare", "pretrain", "budget", "evaluate"])
    assert rows == [{"stage": "prepare", "seconds": 1.0}, {"stage": "pretrain", "seconds": 100.0},
                    {"stage": "variant lambda_max-0.5", "seconds": 20.5},
                    {"stage": "total (stages above)", "seconds": 121.5}]
    assert report.run_time_rows(ex, var, [])[-1]["seconds"] == 20.5
    assert report.run_time_rows(tmp_path / "nothing", tmp_path / "nothing", ["prepare"]) == []


def test_figure_md_relative_link_and_missing_note(tmp_path):
    png = tmp_path / "figures" / "ablations" / "fig5.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG")
    md = report.figure_md("Fig. 5", png, tmp_path)
    assert "![Fig. 5](figures/ablations/fig5.png)" in md and "`figures/ablations/fig5.pdf`" in md
    assert str(tmp_path) not in md
    missing = report.figure_md("Fig. 4", tmp_path / "figures" / "fig4.png", tmp_path)
    assert missing.startswith("*Fig. 4: figure missing (") and "fig4.png" in missing and "![" not in missing


def test_build_report_has_every_section():
    texts = {"table1": "TABLE1 CLAIM", "core": "CORE CLAIM", "table2": "SCHEDULE CLAIM", "fig5": "SWEEP CLAIM",
             "table3": "PRIORS CLAIM"}
    tables = {"static_vs_pvqae": "| s |", "table2": "| t2 |", "fig5": "| f5 |", "table3": "| t3 |",
              "allocation": "| alloc |"}
    md = report.build_report(header={"profile": "tiny", "dataset": "synthetic"},
                             times=[{"stage": "prepare", "seconds": 1.5}], table1_md="| T1 |", paper_md="| P |",
                             texts=texts, tables_md=tables, figures=["FIG-A", "FIG-B"])
    titles = ["# PVQAE study report", "## Run", "### Run times (papermill, per executed notebook)",
              "## Table I: defect detection per class", "### Paper vs ours", "## Core claim: static VQ vs PVQAE",
              "## Table II: lambda schedule", "## Fig. 5: lambda_max sweep", "## Table III: normal budget priors",
              "## Code allocation: normal vs defective, routed vs prior", "## Figures"]
    lines = md.splitlines()
    for t in titles:
        assert t in lines, t
    assert [lines.index(t) for t in titles] == sorted(lines.index(t) for t in titles)  # in this order
    for s in ["- **profile**: tiny", "| prepare | 1.5 |", "| T1 |", "| P |", "FIG-A", "FIG-B", *texts.values(),
              *tables.values()]:
        assert s in md, s
    assert md.endswith("\n") and not md.endswith("\n\n")
    # no paper numbers, no times, fewer tables: a note instead, and no empty sections
    md2 = report.build_report(header={}, times=[], table1_md="| T1 |", paper_md=None,
                              texts={"table1": "a", "core": "b"}, tables_md={"table2": "| t2 |"}, figures=[])
    assert "The paper reports no numbers for this dataset" in md2
    assert "### Run times" not in md2 and "## Table III" not in md2 and "## Table II: lambda schedule" in md2


def test_table1_names_the_backbone_and_the_floor_margins():
    results = {"pvqae": _res(0.60, 0.55, per_class={"mtsd": _pc(0.60, 0.55)}),
               "median_filter": _res(0.53, 0.586, per_class={"mtsd": _pc(0.53, 0.586)}),
               "patchcore": _res(0.967, 0.829, per_class={"mtsd": _pc(0.967, 0.829)}),
               "padim": "not run: no pretrained weights"}
    rows = report.table1_rows(["mtsd"], results, backbone="efficientnet-lite0")
    assert list(rows[0]) == ["class", "PVQAE", "median-filter residual (floor)", "PatchCore (EfficientNet-Lite0)",
                             "PaDiM (EfficientNet-Lite0)"]
    text = report.claim_floor(results, "efficientnet-lite0")
    assert "(the median-filter residual, no training: 53.0 / 58.6 image / pixel AUROC)" in text
    assert "PVQAE +7.0 / -3.6" in text and "PatchCore (EfficientNet-Lite0) +43.7 / +24.3" in text
    assert "PaDiM" not in text and "At or below the floor" not in text
    worse = dict(results, pvqae=_res(0.50))
    assert "At or below the floor by image AUROC: PVQAE." in report.claim_floor(worse, "efficientnet-lite0")
    assert "did not run" in report.claim_floor({"pvqae": _res(0.5)})


def test_other_systems_show_their_own_headline_numbers_labelled():
    results = {"vq_flow": _res(0.95, 0.9), "patch_ae": "not run: no pretrained weights"}
    rows = report.other_system_rows("mtsd", results, "efficientnet-lite0")
    vf, pa = rows
    assert vf["method"] == "VQ-Flow (EfficientNet-Lite0)" and vf["image ours (this data)"] == "95.0"
    assert vf["image paper (MVTec AD mean)"] == "99.5" and vf["pixel paper (MVTec AD mean)"] == "98.3"
    assert "ConvNeXtV2" in vf["what differs"] and "EfficientNet-Lite0" in vf["what differs"]
    assert pa["image ours (this data)"] == "not run" and pa["pixel paper (MVTec AD mean)"] == "n/a"
    assert report.other_system_rows("mtsd", {"pvqae": _res(0.5)}) == []


def test_method_labels_name_features_and_a_score_other_than_the_papers_product():
    assert report.method_label("pvqae", result={"mean": {}}) == "PVQAE"
    feats = {"input_label": "EfficientNet-Lite0 features"}
    assert report.method_label("pvqae", result=feats) == "PVQAE-F (EfficientNet-Lite0 features)"
    assert report.method_label("static_vq", result=feats) == "static VQ-F (EfficientNet-Lite0 features)"
    assert report.method_label("pvqae", result={"score_label": "rec"}) == "PVQAE [score: rec]"
    assert (report.method_label("pvqae", result={**feats, "score_label": "one_plus_ce"})
            == "PVQAE-F (EfficientNet-Lite0 features) [score: one_plus_ce]")
    # the static VQ has no budget, so no score variant: its label stays
    assert report.method_label("static_vq", result={"score_label": "rec"}) == "static VQ (VQ-E style)"

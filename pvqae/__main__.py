"""Command line: ``python -m pvqae --help``."""

from __future__ import annotations

import argparse
import sys

from pvqae import score_cli
from pvqae.stages import ORDER


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvqae",
                                 description="PVQAE study: pipeline stages, profiles, scoring your own images.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute one pipeline stage's notebook (what dvc.yaml calls)")
    r.add_argument("stage", choices=list(ORDER))
    r.add_argument("--name", default=None, help="variant stage: the setting's name, e.g. lambda_max-0.5")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="variant stage: a params key it changes, e.g. --set budget.lambda_max=0.5")

    p = sub.add_parser("profile", help="apply profile overlays (profiles/size/*.yaml, profiles/data/*.yaml) to params.yaml")
    p.add_argument("names", nargs="+", help="e.g. tiny | default | cpu | paper, and/or synthetic | mtsd | mvtec_bottle ...")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="also set a dotted params key, e.g. --set data.source=/data/mvtec_ad")

    d = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage declarations in pvqae/stages/")
    d.add_argument("--check", action="store_true", help="only check that dvc.yaml is current (exit 1 if not)")

    s = sub.add_parser("score", help="score your own images with a trained model: scores.csv, heatmaps, metrics",
                       description="Score images with a trained PVQAE (S = CE(routed, prior budget) x L2 error, "
                                   "Sec. III-C2); writes OUT/scores.csv, OUT/heatmaps/ and, with --masks, "
                                   "OUT/metrics.json.")
    score_cli.add_arguments(s)

    e = sub.add_parser("explore", help="serve the code-allocation explorer as a web page (Voila)",
                       description="Serve notebooks/explore_code_allocation.py as a page with its widgets "
                                   "and figures and no code (Voila); needs a finished `dvc repro`.")
    e.add_argument("--reports", default="reports", help="the run's reports folder (models/ and prepared/)")
    e.add_argument("--port", type=int, default=8866)
    e.add_argument("--ip", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")

    b = sub.add_parser("benchmark", help="speed and size of a profile's model -> reports/benchmarks/*.json")
    b.add_argument("--profile", action="append", default=[], help="size profile(s): tiny, default, cpu, paper")
    b.add_argument("--image-size", type=int, default=None, help="override the profile's image size (e.g. 256)")
    b.add_argument("--batch-size", type=int, action="append", default=None,
                   help="inference batch size(s) to time, the fastest reported (default: 2, 4 and 8)")
    b.add_argument("--n-train", type=int, default=761, help="training images for the PatchCore bank (MTSD: 761)")
    b.add_argument("--out", default="reports/benchmarks")
    b.add_argument("--table", action="store_true", help="only print the markdown tables of the JSON files in --out")
    b.add_argument("--accuracy", action="store_true",
                   help="record the accuracy of the finished run in reports/ (after `dvc repro evaluate`) as "
                        "accuracy_<dataset>_<profile>.json")
    b.add_argument("--suffix", default=None,
                   help="--accuracy: accuracy_<dataset>_<profile>_<size>px_<suffix>.json (a run without PVQAE: "
                        "'baselines' when not given; a PVQAE run: appended to its usual name)")

    args = ap.parse_args(argv)
    if args.cmd == "run":
        from pvqae.config import parse_overrides
        from pvqae.runner import run_stage

        run_stage(args.stage, variant=args.name, overrides=parse_overrides(args.sets))
    elif args.cmd == "profile":
        from pvqae.config import apply_profiles
        from pvqae.settings import Params

        params = apply_profiles(args.names, args.sets, validate=Params.from_dict)
        print(f"params.yaml now: profile={params.get('profile')} dataset={params['data']['dataset']} "
              f"source={params['data']['source']}; run `dvc repro`")
    elif args.cmd == "dvc-yaml":
        from pvqae.paths import REPO_ROOT
        from pvqae.stages import dvc_yaml_text

        path, text = REPO_ROOT / "dvc.yaml", dvc_yaml_text()
        if args.check:
            current = path.read_text() == text
            print(f"{path} is {'current' if current else 'out of date: run `python -m pvqae dvc-yaml`'}")
            return 0 if current else 1
        path.write_text(text)
        print(f"wrote {path}")
    elif args.cmd == "benchmark":
        import json

        from pvqae import benchmark
        from pvqae.paths import repo_path

        if args.table:
            print(benchmark.table(repo_path(args.out)))
            print(benchmark.accuracy_table(repo_path(args.out)))
            print(benchmark.budgeted_table(repo_path(args.out)))
            print(benchmark.selection_table(repo_path(args.out)))
            return 0
        if args.accuracy:
            res = benchmark.accuracy(repo_path("reports"))
            print(benchmark.write(res, repo_path(args.out), suffix=args.suffix))
            print(json.dumps({k: res[k] for k in ("dataset", "profile", "seeds", "training_seconds", "met") if k in res}, indent=1))
            if "baselines" in res:
                print(json.dumps({m: r["mean"] for m, r in res["baselines"]["methods"].items()}, indent=1))
            return 0
        for prof in args.profile or ["default"]:
            res = benchmark.run(prof, tuple(args.batch_size or (2, 4, 8)), n_train=args.n_train,
                                image_size=args.image_size)
            path = benchmark.write(res, repo_path(args.out))
            print(path)
            print(json.dumps({k: res[k] for k in ("image_size", "inference_images_per_second",
                                                   "train_images_per_second", "model_mb", "prior_mb")}, indent=1))
    elif args.cmd == "explore":
        from pvqae.explore_app import serve
        from pvqae.paths import repo_path

        return serve(repo_path(args.reports), port=args.port, ip=args.ip)
    elif args.cmd == "score":
        return score_cli.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

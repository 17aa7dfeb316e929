"""Command line: ``python -m pvqae --help``."""

from __future__ import annotations

import argparse
import sys

from pvqae import score_cli
from pvqae.config import STAGES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvqae",
                                 description="PVQAE study: pipeline stages, profiles, scoring your own images.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute one pipeline stage's notebook (what dvc.yaml calls)")
    r.add_argument("stage", choices=list(STAGES))

    p = sub.add_parser("profile", help="apply profile overlays (profiles/size/*.yaml, profiles/data/*.yaml) to params.yaml")
    p.add_argument("names", nargs="+", help="e.g. tiny | default | cpu | paper, and/or synthetic | mtsd | mvtec_bottle ...")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="also set a dotted params key, e.g. --set data.source=/data/mvtec_ad")

    s = sub.add_parser("score", help="score your own images with a trained model: scores.csv, heatmaps, metrics",
                       description="Score images with a trained PVQAE (S = CE(routed, prior budget) x L2 error, "
                                   "Sec. III-C2); writes OUT/scores.csv, OUT/heatmaps/ and, with --masks, "
                                   "OUT/metrics.json.")
    score_cli.add_arguments(s)

    args = ap.parse_args(argv)
    if args.cmd == "run":
        from pvqae.runner import run_stage

        run_stage(args.stage)
    elif args.cmd == "profile":
        from pvqae.config import apply_profiles

        params = apply_profiles(args.names, args.sets)
        print(f"params.yaml now: profile={params.get('profile')} dataset={params['data']['dataset']} "
              f"source={params['data']['source']}; run `dvc repro`")
    elif args.cmd == "score":
        return score_cli.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

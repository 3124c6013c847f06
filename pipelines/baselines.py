"""DVC stage `baselines`: human split-half reliability (the noise ceiling) and the hand-crafted-feature SVR."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetraits.baselines.study import run_baselines, write_baseline_outputs
from facetraits.config import load_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.models.metrics import shown_score
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("results/baselines"))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        ready_outputs(args.out)
        data = load_prepared(args.prepared)
        with stage_run(params.tracking, "baselines", flatten_params(params.baselines, prefix="baselines.")) as run:
            run.set_tags({TAG_FINGERPRINT: data.meta["fingerprint"]})
            results = run_baselines(data, params.baselines)
            metrics = write_baseline_outputs(data, results, args.out)
            flat = {f"handcrafted/test/pearson/{a}": v for a, v in metrics["handcrafted"]["test"]["pearson"].items()}
            flat["handcrafted/test/pearson_mean"] = metrics["handcrafted"]["test"]["pearson_mean"]
            human = metrics["human"]
            if "skipped" not in human:
                flat.update({f"human/reliability/{a}": v for a, v in human["reliability"].items() if v is not None})
                flat.update({f"human/{k}": human[k] for k in ("reliability_mean", "ceiling_mean")})
            run.log_metrics(flat)
            run.log_artifacts(args.out, "baselines")
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    human_text = (
        f"human reliability mean {shown_score(human['reliability_mean'])} "
        f"[{shown_score(human['reliability_min'])}, {shown_score(human['reliability_max'])}]"
        if "skipped" not in human
        else f"human reliability skipped: {human['skipped']}"
    )
    print(
        f"{human_text}; hand-crafted SVR test mean Pearson r {shown_score(metrics['handcrafted']['test']['pearson_mean'])} "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in results.seconds.items())}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

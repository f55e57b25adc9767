"""The command `python -m dps_map.aggregate SWEEP_DIR [--partial] [--wandb] [--random-weights]`: group a sweep's
jobs by config, merge their records and write aggregate.json and aggregate.md into the sweep directory
(dps_map.runner.sweep_results; docs/outputs.md).

Exit codes: 0 the aggregate is complete; 1 it is written but some group is incomplete (a missing shard, a running,
unfinished or broken job) or some job is broken, so a pipeline does not publish a partial table (--partial accepts
it: exit 0); 2 nothing to aggregate (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import UserError
from .runner.sweep_results import aggregate, log_wandb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dps_map.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--partial", action="store_true",
                        help="exit 0 even when some group is incomplete or some job broken (their means stay out of "
                             "`metrics`, under `partial_metrics`)")
    parser.add_argument("--wandb", action="store_true", help="also log the table to wandb")
    parser.add_argument("--wandb-project", default="dps-map")
    parser.add_argument("--random-weights", action="store_true",
                        help="tests only: FID/KID with a random Inception network (meaningless numbers)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = aggregate(args.sweep_dir, args.random_weights)
    except UserError as err:
        print(f"aggregate: error: {err}", file=sys.stderr)
        return 2
    if args.wandb:
        log_wandb(result, args.sweep_dir, args.wandb_project)
    print((args.sweep_dir / "aggregate.md").read_text(), end="")
    incomplete, broken = result["incomplete_groups"], result["broken_jobs"]
    if (incomplete or broken) and not args.partial:
        print(f"aggregate: error: partial aggregate of '{args.sweep_dir}': {len(incomplete)} incomplete group(s), "
              f"{len(broken)} broken job(s) (listed in aggregate.md); finish or repair them and rerun, or pass "
              "--partial to accept a partial aggregate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

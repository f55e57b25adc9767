"""The command `python -m dps_map.aggregate SWEEP_DIR [--wandb] [--random-weights]`: group a sweep's jobs by config,
merge their records and write aggregate.json and aggregate.md into the sweep directory
(dps_map.runner.aggregate; docs/outputs.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import UserError
from .runner.aggregate import aggregate, log_wandb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dps_map.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command `python -m dps_map.evaluate RUN_OR_SWEEP_DIR [metrics=...] [paths.*] [device=...]`: re-score
finished runs from their PNGs (dps_map.runner.scoring)."""

from __future__ import annotations

import logging


def main(argv=None) -> None:
    """python -m dps_map.evaluate RUN_OR_SWEEP_DIR [metrics=default | metrics.names=[...]] [paths.*] [device=...]"""
    import sys

    from .errors import UserError
    from .runner.scoring import rescore

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__.strip() + "\n\nRe-scores finished runs from their PNGs (LPIPS per sample, FID/KID, "
              "diversity); updates metrics.jsonl and summary.json atomically; a second call changes nothing.")
        sys.exit(0 if args else 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = rescore(args[0], args[1:])
    except UserError as err:
        print(f"dps-map: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    for run_dir, what in results.items():
        print(f"{run_dir}: {what}")


if __name__ == "__main__":
    main()

"""The runner: one run end to end, in a run directory it owns (run.json, the lock, records, summary), and
what reads those directories back (scoring, sweep_results). preflight, bench and the experiments use the names
below; nothing outside the package imports its private helpers.
"""

from .execute import (
    MeasurementUnit,
    bind_class_label,
    check_measurement_batch,
    checked_sampler,
    draw_measurement,
    generator,
    gmm_problem,
    item_seed,
    load_items,
    make_prior,
    make_sampler,
    measure,
    run,
    sample_chunks,
    sample_units,
)
from .rundir import RUN_FILE, check_job_dirs, claim_run_dir, read_marker, run_dirs
from .summary import format_summary, mean_sem, summarize_images

__all__ = ["MeasurementUnit", "RUN_FILE", "bind_class_label", "check_measurement_batch", "check_job_dirs", "checked_sampler",
           "claim_run_dir", "draw_measurement", "format_summary", "generator", "gmm_problem", "item_seed", "load_items", "make_prior",
           "make_sampler", "mean_sem", "measure", "read_marker", "run", "run_dirs", "sample_chunks", "sample_units",
           "summarize_images"]

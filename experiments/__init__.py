"""The studies behind the results in experiments/results/, one driver each (python -m experiments.NAME),
run from a checkout. Not shipped in the wheel."""

"""Paper-reproduction drivers and sweep aggregation (run with python -m experiments.<name>)."""

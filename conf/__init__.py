"""The Hydra config tree of dps-map, installed as the package dps_map.conf (pyproject.toml: package-dir); a
regular package, so setuptools' editable finder maps dps_map.conf to this folder (dps_map/config/sweep.py)."""

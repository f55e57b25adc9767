"""The Hydra config tree of dps-map (a package, so Hydra finds it as pkg://dps_map.conf in an installed wheel)."""

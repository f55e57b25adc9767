"""Repository tools, run from a checkout (python -m tools.NAME): provenance records, the results check, the
paper rehearsal, the tiny prior's comparison and tuning, the ADM 512 CPU measurement. Not shipped in the wheel."""

"""The runs `make demo` makes (python -m dps_map.demo), named once for the demo and for the studies that repeat it."""

DEMO_TASKS = ("sr4", "inpaint_box", "gaussian_deblur")
DEMO_SAMPLERS = ("dps", "dmap")
#: crops per held-out photograph: 2 keeps `make demo` under 4 minutes on 2 CPU cores (DMAP costs
#: 1 forward + 3 VJPs per step, ~10 s per crop; the six runs go two at a time, one per core);
#: `python -m dps_map.run data=demo` uses 4
DEMO_PER_PHOTO = 2

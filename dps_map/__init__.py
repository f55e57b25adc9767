"""dps-map: diffusion priors for imaging inverse problems (DPS, DSG, DMAP, conditional adapters).

Reproduces and extends Xu et al., "Rethinking Diffusion Posterior Sampling: From
Conditional Score Estimator to Maximizing a Posterior" (ICLR 2025).
"""

__version__ = "0.1.0"

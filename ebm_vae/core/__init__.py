"""The method: config, the three networks, Langevin revision (eq. L), Algorithm 1 (teach),
sampling and the weight average."""

"""The method: config, the three networks, Langevin revision (eq. L), Algorithm 1 (teach),
the training loop, sampling and run folders."""

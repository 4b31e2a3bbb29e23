"""Cross-cutting helpers kept out of the algorithm: device and CPU runtime, data-parallel
workers, atomic writes, progress bars, image grids and plots, shared CLI flags."""

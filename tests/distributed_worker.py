"""A data-parallel worker for tests/test_distributed.py, started by paddle.distributed.launch.

  python -m paddle.distributed.launch --nproc_per_node 2 tests/distributed_worker.py \
      CONFIG.json IMAGES.npy RUN_DIR MAX_ITERS [resume]

Runs `train_generation` and writes RUN_DIR/rank<r>.npz (parameters and buffers of this worker)
or, if training stops, RUN_DIR/rank<r>.err (the error message).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ebm_vae.core.config import config_from_dict
from ebm_vae.core.train import TrainingError, train_generation
from ebm_vae.utils.parallel import world


def main(config: str, images: str, run_dir: str, max_iters: str, mode: str = "") -> None:
    cfg = config_from_dict(json.loads(Path(config).read_text()))
    try:
        task = train_generation(cfg, run_dir, int(max_iters), mode == "resume",
                                images=np.load(images), progress=False, threads=1)
    except TrainingError as err:
        (Path(run_dir) / f"rank{world().rank}.err").write_text(str(err))
        return
    state = {f"{name}.{k}": v.numpy() for name, layer in task.models._asdict().items()
             for k, v in layer.state_dict().items()}
    np.savez(Path(run_dir) / f"rank{world().rank}.npz", **state)


if __name__ == "__main__":
    main(*sys.argv[1:])

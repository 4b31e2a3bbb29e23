"""A data-parallel worker for tests/test_distributed.py, started by paddle.distributed.launch.

  python -m paddle.distributed.launch --nproc_per_node 2 tests/distributed_worker.py JOBS.json

Runs the jobs of JOBS.json in order (one launch serves several checks, as each launch costs
seconds of start-up):
- {"kind": "train", "config", "images", "run_dir", "max_iters", "resume"}: `train_generation`;
  writes RUN_DIR/rank<r>.npz (this worker's parameters, buffers and last proposals) or, if
  training stops, RUN_DIR/rank<r>.err (the error message).
- {"kind": "learn", "config", "out"}: `learn_once`; writes OUT/rank<r>.npz.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import numpy as np
import paddle

from ebm_vae.core.config import config_from_dict
from ebm_vae.core.models import build_models
from ebm_vae.core.teach import Optimizers, learn
from ebm_vae.training.generation import train_generation
from ebm_vae.training.stopping import TrainingError
from ebm_vae.utils.parallel import World, data_parallel, init_world, mean_values, shard, world
from ebm_vae.utils.runtime import configure_runtime


def state(models) -> dict[str, np.ndarray]:
    return {f"{name}.{k}": v.numpy() for name, layer in models._asdict().items()
            for k, v in layer.state_dict().items()}


def learn_once(raw: dict, w: World) -> dict[str, np.ndarray]:
    """One `learn` call (steps 4-5) on this worker's shard of fixed global data, revised samples
    and reparameterisation noise, with SGD at lr 1, so the parameter change is minus the
    gradient. Returns those changes and the stats averaged over the workers."""
    cfg = config_from_dict(raw)
    rng = np.random.default_rng(1)
    size = (cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    x_data = rng.uniform(-1, 1, (cfg.train.batch_size, *size)).astype("float32")
    x_tilde = rng.uniform(-1, 1, (cfg.train.num_chains, *size)).astype("float32")
    eps = rng.normal(size=(cfg.train.num_chains, cfg.model.latent_dim)).astype("float32")
    paddle.seed(0)
    models = build_models(cfg.model)
    before = state(models)
    sgd_ebm = paddle.optimizer.SGD(1.0, parameters=models.ebm.parameters())
    sgd_vae = paddle.optimizer.SGD(1.0, parameters=models.encoder.parameters()
                                   + models.decoder.parameters())
    with mock.patch("paddle.randn", lambda shape, dtype=None: paddle.to_tensor(shard(eps, w))):
        stats = asdict(learn(data_parallel(models, w), Optimizers(sgd_ebm, sgd_vae),
                             paddle.to_tensor(shard(x_data, w)),
                             paddle.to_tensor(shard(x_tilde, w)), cfg.train))
    stats.update(mean_values({k: v for k, v in stats.items() if "grad_norm" not in k}, w))
    after = state(models)
    return {**{f"step.{k}": after[k] - before[k] for k in before},
            **{f"stat.{k}": np.float64(v) for k, v in stats.items()}}


def run(job: dict) -> None:
    r = world().rank
    if job["kind"] == "learn":
        Path(job["out"]).mkdir(parents=True, exist_ok=True)
        np.savez(Path(job["out"]) / f"rank{r}.npz", **learn_once(job["config"], world()))
        return
    cfg = config_from_dict(job["config"])
    try:
        task = train_generation(cfg, job["run_dir"], job["max_iters"], job["resume"],
                                images=np.load(job["images"]), progress=False)
    except TrainingError as err:
        (Path(job["run_dir"]) / f"rank{r}.err").write_text(str(err))
        return
    np.savez(Path(job["run_dir"]) / f"rank{r}.npz", **state(task.models),
             proposals=task.last[0])  # this worker's chains g(z) of the last iteration


if __name__ == "__main__":
    configure_runtime("cpu", threads=1)
    init_world()
    for job in json.loads(Path(sys.argv[1]).read_text()):
        run(job)

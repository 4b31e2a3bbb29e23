"""Variational MCMC teaching: the losses and one iteration of Algorithm 1 (docs/method.md §1).

Per iteration: z ~ N(0, I) -> x_hat = g_alpha(z) -> x_tilde = Langevin(x_hat; theta)
-> one Adam step of the EBM on data vs x_tilde -> one Adam step of the VAE on x_tilde.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, NamedTuple, Optional

import paddle

from ebm_vae.core.config import LangevinConfig, TrainConfig
from ebm_vae.core.langevin import langevin


class NonFiniteError(FloatingPointError):
    """A loss, energy, gradient or sample became NaN or infinite; `quantity` names which."""

    def __init__(self, quantity: str, value: float):
        super().__init__(f"non-finite {quantity} ({value})")
        self.quantity = quantity


def ebm_loss(ebm: Callable[[paddle.Tensor], paddle.Tensor], x_data: paddle.Tensor, x_revised: paddle.Tensor,
             energy_penalty: float = 0.0) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Step 4: L_theta = mean_j f(x_tilde_j) - mean_i f(x_i). Its gradient is minus the MLE gradient
    E_data[df/dtheta] - E_model[df/dtheta], so minimising it raises f on data and lowers it on
    samples. `energy_penalty` = a > 0 adds a * (mean_i f(x_i)^2 + mean_j f(x_tilde_j)^2) [OURS,
    after IGEBM], which keeps the energies near 0. Returns (loss, mean f(data), mean f(revised))."""
    e_data, e_revised = ebm(x_data), ebm(x_revised.detach())
    f_data, f_revised = e_data.mean(), e_revised.mean()
    loss = f_revised - f_data
    if energy_penalty > 0:
        loss = loss + energy_penalty * ((e_data ** 2).mean() + (e_revised ** 2).mean())
    return loss, f_data, f_revised


def kl_to_standard_normal(mu: paddle.Tensor, log_sigma: paddle.Tensor) -> paddle.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample = -1/2 sum_j (1 + 2 log sigma_j - mu_j^2 - sigma_j^2)."""
    return -0.5 * (1 + 2 * log_sigma - mu ** 2 - paddle.exp(2 * log_sigma)).sum(axis=1)


def vae_loss(encoder: Callable, decoder: Callable, x_revised: paddle.Tensor, gamma: float
             ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Step 5: mean_i [ ||g(z_i) - x_tilde_i||^2 + gamma * KL(q(z|x_tilde_i) || p(z)) ],
    z_i = mu + eps * sigma (reparameterised). x_tilde is a constant: no gradient reaches the
    chain or theta. Returns (loss, mean SSE, mean KL)."""
    x = x_revised.detach()
    mu, log_sigma = encoder(x)  # q_phi(z | x_tilde)
    eps = paddle.randn(mu.shape, dtype=mu.dtype)
    z = mu + eps * paddle.exp(log_sigma)  # z ~ q_phi(z | x_tilde), reparameterised
    recon = ((decoder(z) - x) ** 2).flatten(1).sum(axis=1)  # ||g_alpha(z) - x_tilde||^2
    kl = kl_to_standard_normal(mu, log_sigma)
    return (recon + gamma * kl).mean(), recon.mean(), kl.mean()


@dataclass
class TeachStats:
    loss_ebm: float
    loss_vae: float
    recon: float
    kl: float
    f_data: float
    f_revised: float
    grad_norm_ebm: float
    grad_norm_vae: float


def l2_norm(tensors: list) -> float:
    """The L2 norm of several tensors together (one host sync)."""
    sq = [(t.astype("float32") ** 2).sum() for t in tensors]
    return math.sqrt(float(paddle.add_n(sq))) if sq else 0.0


def _grad_norm(params: list) -> float:
    return l2_norm([p.grad for p in params if p.grad is not None])


def _checked(quantity: str, value: float | paddle.Tensor) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteError(quantity, value)
    return value


def _gradients(opt: paddle.optimizer.Optimizer, loss: paddle.Tensor, params: list, name: str,
               checks: dict[str, paddle.Tensor]) -> tuple[float, float]:
    """Backpropagate `loss` into `params`, then check that the values in `checks`, the loss and the
    gradient are finite (after backward, where a data-parallel engine has combined the workers'
    gradients). Returns (loss, gradient norm); raises NonFiniteError."""
    opt.clear_grad()
    loss.backward()
    for quantity, value in checks.items():
        _checked(quantity, value)
    return _checked(f"{name} loss", loss), _checked(f"{name} gradient norm", _grad_norm(params))


def _step(opt: paddle.optimizer.Optimizer) -> None:
    with paddle.utils.unique_name.guard():  # stable optimizer-state names, so checkpoints load
        opt.step()
    opt.clear_grad()


def _conditioned(models: NamedTuple, c: Optional[paddle.Tensor]):
    """How steps 2-3 see the condition: the proposal g(z) or g(z, c), the EBM's extra inputs
    along a chain, and the projection onto the support of p(x | c) (`ebm.chain_inputs` and
    `ebm.project` of a conditional EBM; nothing without a condition)."""
    if c is None:
        return models.decoder, (), None
    keep = lambda x: models.ebm.project(x, c)  # noqa: E731
    with paddle.no_grad():
        cond = models.ebm.chain_inputs(c)
    return (lambda z: keep(models.decoder(z, c))), cond, keep


def revise(models: NamedTuple, num_chains: int, latent_dim: int, lv: LangevinConfig,
           c: Optional[paddle.Tensor] = None, grad_rms: Optional[list[float]] = None
           ) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Steps 1-3: z ~ N(0, I_d), x_hat = g_alpha(z) (no pixel noise [CODE]), x_tilde = Langevin(x_hat).
    With a condition `c` (one row per chain), x_hat = g_alpha(z, c) and the chains run under
    f_theta(., c). `grad_rms` receives the RMS of df/dx at the last Langevin step (see `langevin`)."""
    z = paddle.randn([num_chains, latent_dim])  # step 1
    decode, cond, project = _conditioned(models, c)
    with paddle.no_grad():
        x_hat = decode(z)  # step 2
    x_tilde = langevin(models.ebm, x_hat, lv, cond=cond, project=project, grad_rms=grad_rms)  # step 3
    return x_hat, x_tilde


class Optimizers(NamedTuple):
    """Adam for theta (`ebm`); one Adam for (alpha, phi) jointly (`vae`) [CODE]."""
    ebm: paddle.optimizer.Adam
    vae: paddle.optimizer.Adam


def make_optimizers(models: NamedTuple, train: TrainConfig) -> Optimizers:
    """The two Adams of `train` (lr_ebm, lr_vae, beta1, beta2)."""
    def adam(lr: float, params: list) -> paddle.optimizer.Adam:
        return paddle.optimizer.Adam(lr, beta1=train.beta1, beta2=train.beta2, epsilon=1e-8,
                                     parameters=params)
    return Optimizers(adam(train.lr_ebm, models.ebm.parameters()),
                      adam(train.lr_vae, models.encoder.parameters() + models.decoder.parameters()))


def learn(models: NamedTuple, optimizers: Optimizers, x_data: paddle.Tensor,
          x_tilde: paddle.Tensor, train: TrainConfig, c: Optional[paddle.Tensor] = None
          ) -> TeachStats:
    """Steps 4-5 of Algorithm 1: one EBM update on data vs revised samples, and one VAE update on
    the revised samples (`train.gamma`). With a condition `c` (image completion), every network
    also takes c.

    Stabilisers [OURS], off at 0: `train.data_noise` adds N(0, data_noise^2) to the data the EBM
    sees (after Nijkamp et al. 2020); `train.energy_penalty`: see `ebm_loss`.

    L_phi,alpha does not depend on theta, so both gradients are computed and checked before
    either update: a NaN/inf raises NonFiniteError with no parameter changed.
    """
    if train.data_noise > 0:
        x_data = x_data + train.data_noise * paddle.randn(x_data.shape, dtype=x_data.dtype)
    f, q, g = ((models.ebm, models.encoder, models.decoder) if c is None else
               (lambda v: models.ebm(v, c), lambda v: models.encoder(v, c),
                lambda z: models.decoder(z, c)))
    loss_e, f_data, f_rev = ebm_loss(f, x_data, x_tilde, train.energy_penalty)  # step 4: L_theta
    loss_e, norm_e = _gradients(optimizers.ebm, loss_e, models.ebm.parameters(), "EBM", {
        "revised samples (Langevin)": x_tilde.abs().max(), "energy f(data)": f_data,
        "energy f(revised)": f_rev})
    loss_v, recon, kl = vae_loss(q, g, x_tilde, train.gamma)  # step 5: negative ELBO of x_tilde
    vae_params = models.encoder.parameters() + models.decoder.parameters()
    loss_v, norm_v = _gradients(optimizers.vae, loss_v, vae_params, "VAE", {})
    _step(optimizers.ebm)  # step 4: theta <- Adam(theta, dL_theta/dtheta)
    _step(optimizers.vae)  # step 5: (alpha, phi) <- Adam(dL/d(alpha, phi))
    return TeachStats(loss_e, loss_v, float(recon), float(kl), float(f_data), float(f_rev),
                      norm_e, norm_v)


class Taught(NamedTuple):
    """What one iteration of Algorithm 1 returns: its losses and norms, the proposals x_hat, the
    revised samples x_tilde and the RMS of df/dx at the last Langevin step (`grad_rms`)."""
    stats: TeachStats
    x_hat: paddle.Tensor
    x_tilde: paddle.Tensor
    grad_rms: list[float]


def teach_step(models: NamedTuple, optimizers: Optimizers, x_data: paddle.Tensor, cfg: Any,
               num_chains: int, c: Optional[paddle.Tensor] = None,
               revising: Optional[ContextManager] = None) -> Taught:
    """One iteration of Algorithm 1, the one training runs: `revise` (steps 1-3: propose, revise
    with Langevin), then `learn` (steps 4-5: update the EBM, update the VAE). `cfg`: the
    experiment's config (its model.latent_dim, langevin and train sections). With a condition `c`,
    x_data and c have one row per chain (image completion). `revising`: a context the steps 1-3
    run in (they change no parameter, so training lets a second Ctrl-C abandon them there)."""
    grad_rms: list[float] = []
    with revising or contextlib.nullcontext():
        x_hat, x_tilde = revise(models, num_chains, cfg.model.latent_dim, cfg.langevin, c,
                                grad_rms)  # steps 1-3
    stats = learn(models, optimizers, x_data, x_tilde, cfg.train, c)  # steps 4-5
    return Taught(stats, x_hat, x_tilde, grad_rms)


def decayed_lr(lr0: float, epoch: int, rate: float, every: float) -> float:
    """lr0 * rate^(epoch / every), updated once per epoch (TF exponential_decay, staircase=False) [CODE]."""
    return lr0 * rate ** (epoch / every)

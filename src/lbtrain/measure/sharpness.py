"""Sharpness: the top eigenvalue of the loss Hessian (Keskar et al. 2017's cheaper proxy;
Cohen et al. 2021: gradient descent trains at the "edge of stability", lr * lambda_max ~ 2).

The Hessian is never formed: ARPACK's implicitly restarted Lanczos (scipy's `eigsh`) sees
it only through Hessian-vector products. One backward with `create_graph=True` builds the
gradient's graph once; each product is one more backward through it. Lanczos converges in
fewer products than power iteration, whose usual stopping rule (the estimate changed little)
can stop short of the eigenvalue when the top two are close; a start vector near the answer
(the previous measurement's eigenvector) saves more products.

Adam's edge of stability concerns the preconditioned Hessian P^-1 H (lbtrain/measure/stability.py);
with `scale` = P^-1/2 the products are those of P^-1/2 H P^-1/2, symmetric and with the
same eigenvalues. `batch_sharpness` is the curvature of one batch's loss along its own
gradient, g^T H g / |g|^2: one product.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd


def top_hessian_eigenvalue(
    loss: Tensor,
    params: list[Tensor],
    *,
    tol: float,
    max_iter: int,
    krylov_dim: int,
    seed: int = 0,
    start: np.ndarray | None = None,
    scale: Tensor | None = None,
) -> tuple[float, int, np.ndarray]:
    """(the largest eigenvalue of the Hessian of `loss` w.r.t. `params`, Hessian-vector
    products used, its eigenvector, flat). `tol`: ARPACK's relative accuracy of the
    eigenvalue; `max_iter`: its cap on restarts (NaN if it has not converged by then, or
    if the loss or its curvature is not finite: a diverged run).
    `start`: the first Lanczos vector; by default one drawn from a generator seeded by
    `seed`, so measuring never touches the training's random streams. `krylov_dim`: the
    Lanczos vectors kept between restarts (ARPACK's ncv; its default of 20 spends 20
    products before the first check, even from a start that is already the answer).
    `scale`: a flat vector d; the eigenvalue is then that of diag(d) H diag(d)."""
    sizes = [p.numel() for p in params]
    if start is None:
        start = np.random.default_rng(seed).standard_normal(sum(sizes))
    if not torch.isfinite(loss):  # diverged: no curvature to measure (ARPACK would fail)
        return float("nan"), 0, start
    grads = torch.autograd.grad(loss, params, create_graph=True)
    products = 0

    def hessian_times(v: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        flat = torch.from_numpy(np.asarray(v, dtype=np.float32).ravel()).to(params[0].device)
        flat = flat if scale is None else flat * scale
        vs = [u.view_as(p) for u, p in zip(flat.split(sizes), params, strict=True)]
        hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        hv = torch.cat([h.reshape(-1) for h in hv])
        return (hv if scale is None else hv * scale).double().cpu().numpy()

    n = sum(sizes)
    operator = LinearOperator((n, n), matvec=hessian_times, dtype=np.float64)
    try:
        values, vectors = eigsh(
            operator, k=1, which="LA", v0=start, ncv=krylov_dim, tol=tol, maxiter=max_iter
        )
    except (ArpackNoConvergence, ArpackError):  # ArpackError: NaN or inf in the products
        return float("nan"), products, start
    return float(values[0]), products, vectors[:, 0]


def batch_sharpness(loss: Tensor, params: list[Tensor]) -> Tensor:
    """g^T H g / |g|^2 for the gradient g and Hessian H of `loss`: the curvature along the
    step this batch asks for (a device scalar: no host sync)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = [d.detach() for d in grads]
    hg = torch.autograd.grad(grads, params, grad_outputs=g)
    curvature = sum((a * b).sum() for a, b in zip(g, hg, strict=True))
    return curvature / sum(a.square().sum() for a in g)


@contextmanager
def measuring_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """The model as measured: BatchNorm (Ghost BN too) in `bn_mode` ("train": each batch's
    own statistics, the loss training descends; "eval": the running statistics, the network
    at test time), dropout off (a Hessian of a random function is no Hessian), and after it
    every buffer (BatchNorm's running statistics) and mode as they were."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(bn_mode == "train")
    for m in model.modules():
        if isinstance(m, _DropoutNd):
            m.eval()
    try:
        with buffers_kept(model):
            yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Every buffer of `model` (BatchNorm's running statistics, ...) as it was before: a
    measurement's forward passes in training mode leave no trace in them."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved, strict=True):
                buffer.copy_(value)

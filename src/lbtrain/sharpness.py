"""Sharpness: the top eigenvalue of the loss Hessian (Keskar et al. 2017's cheaper proxy;
Cohen et al. 2021: gradient descent trains at the "edge of stability", lr * lambda_max ~ 2).

The Hessian is never formed: ARPACK's implicitly restarted Lanczos (scipy's `eigsh`) sees
it only through Hessian-vector products. One backward with `create_graph=True` builds the
gradient's graph once; each product is one more backward through it. Lanczos converges in
fewer products than power iteration, whose usual stopping rule (the estimate changed little)
can stop short of the eigenvalue when the top two are close; a start vector near the answer
(the previous measurement's eigenvector) saves more products.
"""

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor


def top_hessian_eigenvalue(
    loss: Tensor,
    params: list[Tensor],
    tol: float = 1e-2,
    max_iter: int = 100,
    seed: int = 0,
    start: np.ndarray | None = None,
    krylov_dim: int = 4,
) -> tuple[float, int, np.ndarray]:
    """(the largest eigenvalue of the Hessian of `loss` w.r.t. `params`, Hessian-vector
    products used, its eigenvector, flat). `tol`: ARPACK's relative accuracy of the
    eigenvalue; `max_iter`: its cap on restarts (NaN if it has not converged by then).
    `start`: the first Lanczos vector; by default one drawn from a generator seeded by
    `seed`, so measuring never touches the training's random streams. `krylov_dim`: the
    Lanczos vectors kept between restarts (ARPACK's ncv; its default of 20 spends 20
    products before the first check, even from a start that is already the answer)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sizes = [p.numel() for p in params]
    products = 0

    def hessian_times(v: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        flat = torch.from_numpy(np.asarray(v, dtype=np.float32).ravel()).to(params[0].device)
        vs = [u.view_as(p) for u, p in zip(flat.split(sizes), params, strict=True)]
        hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).double().cpu().numpy()

    n = sum(sizes)
    if start is None:
        start = np.random.default_rng(seed).standard_normal(n)
    operator = LinearOperator((n, n), matvec=hessian_times, dtype=np.float64)
    try:
        values, vectors = eigsh(
            operator, k=1, which="LA", v0=start, ncv=krylov_dim, tol=tol, maxiter=max_iter
        )
    except ArpackNoConvergence:
        return float("nan"), products, start
    return float(values[0]), products, vectors[:, 0]

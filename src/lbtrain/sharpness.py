"""Sharpness: the top eigenvalue of the loss Hessian, by power iteration on Hessian-vector
products (Keskar et al. 2017's cheaper proxy; Cohen et al. 2021: gradient descent trains at
the "edge of stability", lr * lambda_max ~ 2).

One backward with `create_graph=True` builds the gradient's graph once; each iteration is
one more backward through it (a Hessian-vector product). The start vector comes from its own
seeded generator, so measuring never touches the training's random streams.
"""

import torch
from torch import Tensor


def top_hessian_eigenvalue(
    loss: Tensor, params: list[Tensor], tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> tuple[Tensor, int]:
    """(eigenvalue of the Hessian of `loss` w.r.t. `params` with the largest magnitude,
    iterations used). Stops when the Rayleigh quotient changes by less than `tol` relative,
    or after `max_iter` products; each convergence check reads one value on the host."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    v = _normalized(v)
    eigenvalue, previous, iteration = None, None, 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 (returned)
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        eigenvalue = sum((h * u).sum() for h, u in zip(hv, v, strict=True))  # v normalised
        v = _normalized(hv)
        if previous is not None and abs(eigenvalue - previous) <= tol * abs(eigenvalue):
            break
        previous = eigenvalue
    return eigenvalue.detach(), iteration


def _normalized(vectors: list[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(sum(u.square().sum() for u in vectors))
    return [u / norm for u in vectors]

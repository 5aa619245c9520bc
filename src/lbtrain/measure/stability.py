"""The edge of stability: the sharpness at which an optimizer's step stops converging on a
quadratic, so that training cannot stay sharper than it (Cohen et al. 2021, 2022).

On the quadratic lambda w^2 / 2 each update is a linear recursion in w; it diverges once
lambda passes the threshold where a root of its characteristic polynomial reaches -1:
- gradient descent, w -= lr g: 2 / lr;
- heavy ball as torch.optim.SGD has it (b = momentum b + (1 - dampening) g, w -= lr b):
  2 (1 + momentum) / (lr (1 - dampening));
- Nesterov as torch.optim.SGD has it (w -= lr (g + momentum b)): the roots of
  z^2 - (1 + momentum)(1 - a) z + momentum (1 - a), a = lr lambda, reach -1 at
  a = (2 + 2 momentum) / (1 + 2 momentum);
- Adam with its preconditioner P frozen (m = beta1 m + (1 - beta1) g, w -= lr m / P): the
  heavy-ball recursion in the eigenvalues of P^-1 H, 2 (1 + beta1) / ((1 - beta1) lr), 38 / lr
  at beta1 = 0.9. What Adam holds there is the preconditioned sharpness lambda_max(P^-1 H).
LARS and LAMB rescale each layer's step by its trust ratio: no such threshold is known.

Each function takes a torch param group (its lr, momentum, ...) and returns
(threshold, what it bounds: "hessian" for lambda_max(H), "preconditioned" for P^-1 H).
"""

import math


def sgd_threshold(group: dict) -> tuple[float, str]:
    lr, beta = group["lr"], group.get("momentum", 0.0)
    if lr <= 0:
        return math.inf, "hessian"
    if group.get("nesterov"):
        return (2 + 2 * beta) / (lr * (1 + 2 * beta)), "hessian"
    return 2 * (1 + beta) / (lr * (1 - group.get("dampening", 0.0))), "hessian"


def adam_threshold(group: dict) -> tuple[float, str]:
    lr, beta1 = group["lr"], group["betas"][0]
    return (2 * (1 + beta1) / ((1 - beta1) * lr) if lr > 0 else math.inf), "preconditioned"

"""Forward models y = A(x) + n (docs/architecture.md).

An operator maps images (B, C, H, W) (or vectors (B, d)) to measurements; linear ones also give the
adjoint A^T and the "transpose" of the PSLD code (the map PSLD's gluing uses; A^T unless the operator says
otherwise). ``naive(y)`` is the measurement mapped back to image space without any prior (bicubic
upsampling, the masked or blurred image): the baseline every method must beat, and the hint a
conditional adapter reads.
"""

from __future__ import annotations

import torch


class Operator:
    """A forward model. Subclasses implement forward; linear ones set linear = True."""

    linear = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Keep only what the measurement observes (inpainting zeroes the missing pixels of y)."""
        return y

    def naive(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement resized to the image: the no-prior baseline."""
        return y

    def to(self, device) -> "Operator":
        """Move every tensor attribute to device (returns self)."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def describe(self) -> dict:
        """Scalars that define the operator (for logs and summary.json)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool))}


class LinearOperator(Operator):
    """A linear A. The default adjoint is the vector-Jacobian product of forward (exact for linear maps)."""

    linear = True

    def input_shape(self, y: torch.Tensor) -> tuple[int, ...]:
        return tuple(y.shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y, as the VJP of the linear map A at 0: <A x, y> = <x, A^T y> (differentiable in y when y
        carries gradients, e.g. PSLD's A^T A D(z0_hat))."""
        with torch.enable_grad():
            x = torch.zeros(self.input_shape(y), dtype=y.dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.forward(x), x, y, create_graph=y.requires_grad)
        return grad

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        """The map the PSLD code (Rout et al.; Xu et al.'s run_psld) calls the operator's "transpose", T in PSLD's
        gluing T y + (I - T A) x: A^T here; SR and blur override it with what that code uses
        (docs/methods.md, PSLD)."""
        return self.adjoint(y)


class Identity(LinearOperator):
    """A = I (denoising)."""

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y


class MatrixOperator(LinearOperator):
    """A dense matrix acting on vectors: A(x) = x A^T for x of shape (B, d) (the GMM tasks)."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def forward(self, x):
        return x @ self.matrix.T.to(x.dtype)

    def adjoint(self, y):
        return y @ self.matrix.to(y.dtype)

    def naive(self, y):
        """Minimum-norm least-squares solution A^+ y."""
        return y @ torch.linalg.pinv(self.matrix).T.to(y.dtype)


class StackedOperator(LinearOperator):
    """Several measurements' operators over one stacked batch (``measurement_batch``): rows
    [r_j, r_j + n_j) of x go through operator j, so each measurement keeps its own mask or kernel.
    Every method maps row blocks independently, so a row's result is what its operator gives alone."""

    def __init__(self, parts):
        self.parts = [(op, int(rows)) for op, rows in parts]  # [(Operator, rows)]
        self.linear = all(op.linear for op, _ in self.parts)

    def _each(self, method: str, v: torch.Tensor) -> torch.Tensor:
        sizes = [rows for _, rows in self.parts]
        if v.shape[0] != sum(sizes):
            raise ValueError(f"stacked operator covers {sum(sizes)} rows, got a batch of {v.shape[0]}")
        return torch.cat([getattr(op, method)(block) for (op, _), block in zip(self.parts, v.split(sizes))])

    def forward(self, x):
        return self._each("forward", x)

    def adjoint(self, y):
        return self._each("adjoint", y)

    def transpose(self, y):
        return self._each("transpose", y)

    def restrict(self, y):
        return self._each("restrict", y)

    def naive(self, y):
        return self._each("naive", y)

    def input_shape(self, y):
        shape = self.parts[0][0].input_shape(y[: self.parts[0][1]])
        return (y.shape[0], *shape[1:])

    def to(self, device):
        for op, _ in self.parts:
            op.to(device)
        return self

    def describe(self) -> dict:
        return self.parts[0][0].describe()

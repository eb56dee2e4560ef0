"""The book's optimizers (chapter 6): SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, and AdamW.

Use them as in the book:

    optimizer = Adam(lr=0.001)
    for i in range(iters):
        grads = network.gradient(x_batch, t_batch)
        optimizer.update(network.params, grads)

`params` and `grads` map names to arrays; a name whose gradient is missing or None is
skipped. Every update ends with `params[name] = new_array`: on NumPy, torch, CuPy and
array-api-strict that is the same array, updated in place (no new parameter array is
allocated); on JAX, whose arrays are immutable, it is a new array, and rebinding it is
what makes the update reach the network. State (v, h, m) has each parameter's dtype and
device. Every optimizer takes `clip_norm`: clip the gradients' global L2 norm first.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator

from array_api_compat import is_writeable_array

from ._backend import is_array, library_name, namespace, same_shape, size, static_shape

__all__ = ["SGD", "AdaGrad", "Adam", "AdamW", "Momentum", "Nesterov", "Optimizer", "RMSprop",
           "clip_grad_norm", "global_norm"]


# --- In-place arithmetic where the array allows it --------------------------------------

def _inplace(op, inplace_op, x, value):
    if is_writeable_array(x):
        return inplace_op(x, value)  # Dask has no in-place operators: this rebinds there
    return op(x, value)  # JAX, read-only NumPy views: a new array


def _iadd(x, value):
    """`x += value`, written into `x` where it is writeable; always use the result."""
    return _inplace(operator.add, operator.iadd, x, value)


def _isub(x, value):
    """`x -= value`, written into `x` where it is writeable; always use the result."""
    return _inplace(operator.sub, operator.isub, x, value)


def _imul(x, value):
    """`x *= value`, written into `x` where it is writeable; always use the result."""
    return _inplace(operator.mul, operator.imul, x, value)


# --- Gradient clipping ----------------------------------------------------------------

def global_norm(grads):
    """The L2 norm of all arrays in `grads` (a mapping or a sequence) together, as a 0-D
    array of their common dtype. Computed as peak * ||g / peak|| so float32 squares can
    neither overflow nor underflow."""
    values = [g for g in (grads.values() if hasattr(grads, "values") else grads)
              if g is not None and size(g) != 0]
    xp = namespace(*values)
    dtype = xp.result_type(*values)
    values = [xp.astype(g, dtype, copy=False) for g in values]
    peak = functools.reduce(xp.maximum, [xp.max(xp.abs(g)) for g in values])
    scale = xp.where((peak > 0.0) & xp.isfinite(peak), peak, 1.0)  # 0, inf, nan: no scaling
    total = functools.reduce(operator.add, [xp.sum(xp.square(g / scale)) for g in values])
    return scale * xp.sqrt(total)


def clip_grad_norm(grads, max_norm):
    """New gradients scaled by max_norm / (norm + 1e-6) when their global norm exceeds
    `max_norm` (as torch.nn.utils.clip_grad_norm_), and that norm. `grads` is unchanged;
    None entries stay None. Lazy-safe: the decision is an `xp.where`, not a Python `if`."""
    max_norm = _number("max_norm", max_norm, lambda v: 0.0 < v < math.inf, "> 0 and finite")
    present = {k: g for k, g in grads.items() if g is not None}
    if not present:
        return dict(grads), None
    xp = namespace(*present.values())
    norm = global_norm(present)
    coef = xp.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0)
    clipped = {k: None if g is None else g * xp.astype(coef, g.dtype) for k, g in grads.items()}
    return clipped, norm


# --- Optimizers -----------------------------------------------------------------------

def _number(name, value, ok, expected) -> float:
    """`value` as a float after checking it is a real number with ok(value) true."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number {expected}, got "
                        f"{type(value).__name__} {value!r}")
    if not ok(float(value)):  # NaN fails every comparison, so it lands here too
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _non_negative(name, value):
    return _number(name, value, lambda v: 0.0 <= v < math.inf, ">= 0 and finite")


def _fraction(name, value):
    return _number(name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


class Optimizer:
    """Base of the optimizers: checks `update`'s inputs, clips, then runs `_step` per name.

    A subclass lists its per-parameter state dicts in `state_names` (the book's `v`, `h`,
    `m`) and implements `_step(xp, name, param, grad) -> new param`.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, lr, clip_norm=None):
        self.lr = _non_negative("lr", lr)
        if clip_norm is not None:
            clip_norm = _number("clip_norm", clip_norm, lambda v: 0.0 < v < math.inf,
                                "> 0 and finite, or None")
        self.clip_norm = clip_norm
        for state in self.state_names:
            setattr(self, state, {})

    def update(self, params, grads):
        """Update every `params[name]` that has a gradient in `grads`."""
        grads = self._checked_grads(params, grads)  # raises before anything changes
        if self.clip_norm is not None:
            grads, _ = clip_grad_norm(grads, self.clip_norm)
        self._begin_update()
        for name, grad in grads.items():
            param = params[name]
            params[name] = self._step(namespace(param, grad), name, param, grad)

    def _begin_update(self):
        """Hook run once per update, after the checks (Adam counts its steps here)."""

    def _state(self, xp, state, name, like):
        """The state array `state`[name], zeros like the parameter at the first step."""
        store = getattr(self, state)
        if name not in store:
            store[name] = xp.zeros_like(like)
        return store[name]

    def _checked_grads(self, params, grads):
        """{name: grad} for the names of `params` that have a gradient, each grad in its
        parameter's dtype; TypeError/ValueError on a mismatch."""
        checked = {}
        for name in params.keys():
            grad = grads.get(name)
            if grad is None:
                continue
            param = params[name]
            for what, value in (("params", param), ("grads", grad)):
                if not is_array(value):
                    raise TypeError(f"{what}[{name!r}] must be an array, got "
                                    f"{type(value).__name__}")
            xp = namespace(param, grad)
            for what, value in (("params", param), ("grads", grad)):
                if not xp.isdtype(value.dtype, "real floating"):
                    raise TypeError(f"{what}[{name!r}] must be real floating, got dtype "
                                    f"{value.dtype} ({library_name(value)})")
            shape = static_shape(param)
            if not same_shape(static_shape(grad), shape):
                raise ValueError(f"grads[{name!r}] has shape {tuple(grad.shape)}, but "
                                 f"params[{name!r}] has shape {tuple(param.shape)}")
            for state in self.state_names:
                old = getattr(self, state).get(name)
                if old is not None and not same_shape(static_shape(old), shape):
                    raise ValueError(f"{type(self).__name__} state {state}[{name!r}] has shape "
                                     f"{tuple(old.shape)}, but params[{name!r}] now has shape "
                                     f"{tuple(param.shape)}; use a new optimizer for a new "
                                     f"network")
            # The update keeps the parameter's dtype (no promotion on rebinding backends).
            checked[name] = xp.astype(grad, param.dtype, copy=False)
        return checked

    def __repr__(self):
        hyper = {k: v for k, v in vars(self).items()
                 if isinstance(v, float | int) and not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in hyper.items())})"


class SGD(Optimizer):
    """Stochastic gradient descent: W -= lr * dW."""

    def __init__(self, lr=0.01, clip_norm=None):
        super().__init__(lr, clip_norm)

    def _step(self, xp, name, param, grad):
        return _isub(param, self.lr * grad)


class Momentum(Optimizer):
    """v = momentum * v - lr * dW;  W += v."""

    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.momentum = _fraction("momentum", momentum)

    def _step(self, xp, name, param, grad):
        v = _imul(self._state(xp, "v", name, param), self.momentum)
        v = self.v[name] = _isub(v, self.lr * grad)
        return _iadd(param, v)


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's form (its common/optimizer.py):

        v = momentum * v - lr * dW
        W += momentum**2 * v - (1 + momentum) * lr * dW

    The book uses the *updated* v here; torch's SGD(nesterov=True) (Bengio et al. 2012,
    eq. 7) uses the previous one, so the two give different trajectories.
    """

    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.momentum = _fraction("momentum", momentum)

    def _step(self, xp, name, param, grad):
        m = self.momentum
        v = _imul(self._state(xp, "v", name, param), m)
        v = self.v[name] = _isub(v, self.lr * grad)
        param = _iadd(param, m * m * v)
        return _isub(param, (1.0 + m) * self.lr * grad)


class AdaGrad(Optimizer):
    """h += dW * dW;  W -= lr * dW / (sqrt(h) + eps): each weight's own, shrinking lr."""

    state_names = ("h",)

    def __init__(self, lr=0.01, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.eps = _non_negative("eps", eps)  # the book's 1e-7: no division by zero

    def _step(self, xp, name, param, grad):
        h = self.h[name] = _iadd(self._state(xp, "h", name, param), grad * grad)
        return _isub(param, self.lr * grad / (xp.sqrt(h) + self.eps))


class RMSprop(Optimizer):
    """AdaGrad with a decaying h: h = decay_rate * h + (1 - decay_rate) * dW * dW."""

    state_names = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.decay_rate = _fraction("decay_rate", decay_rate)
        self.eps = _non_negative("eps", eps)

    def _step(self, xp, name, param, grad):
        h = _imul(self._state(xp, "h", name, param), self.decay_rate)
        h = self.h[name] = _iadd(h, (1.0 - self.decay_rate) * grad * grad)
        return _isub(param, self.lr * grad / (xp.sqrt(h) + self.eps))


class Adam(Optimizer):
    """Adam as the book writes it: moving averages m and v of dW and dW**2, and the bias
    correction folded into the step size:

        lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)
        W -= lr_t * m / (sqrt(v) + eps)

    (torch adds eps to sqrt(v) / sqrt(1 - beta2**iter) instead: the same for eps = 0.)
    """

    state_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _non_negative("eps", eps)
        self.iter = 0

    def _begin_update(self):
        self.iter += 1
        self._lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (
            1.0 - self.beta1**self.iter)

    def _step(self, xp, name, param, grad):
        m, v = self._state(xp, "m", name, param), self._state(xp, "v", name, param)
        m = self.m[name] = _iadd(m, (1.0 - self.beta1) * (grad - m))
        v = self.v[name] = _iadd(v, (1.0 - self.beta2) * (grad * grad - v))
        return _isub(param, self._lr_t * m / (xp.sqrt(v) + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW): before
    the Adam step, W *= 1 - lr * weight_decay. The decay does not pass through m and v,
    unlike an L2 term added to the loss."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, weight_decay=0.01, eps=1e-7,
                 clip_norm=None):
        super().__init__(lr, beta1, beta2, eps, clip_norm)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def _step(self, xp, name, param, grad):
        param = _imul(param, 1.0 - self.lr * self.weight_decay)
        return super()._step(xp, name, param, grad)

"""The book's optimizers (chapter 6): SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, and AdamW.

Use them as in the book:

    optimizer = Adam(lr=0.001)
    for i in range(iters):
        grads = network.gradient(x_batch, t_batch)
        optimizer.update(network.params, grads)

`params` and `grads` map names to arrays (or, as in the book's 2-D optimizer comparison,
Python numbers, updated as numbers); a name whose gradient is missing or None is skipped,
a gradient whose name matches no parameter is an error. Every update ends with
`params[name] = new_array`: on NumPy, torch, CuPy and array-api-strict that is the same
array, updated in place (no new parameter array is allocated); on JAX, whose arrays are
immutable, it is a new array, and rebinding it is what makes the update reach the network.
Every optimizer takes `clip_norm`: clip the gradients' global L2 norm first.

The optimizer's state is arrays only: the book's per-parameter dicts (`v`, `h`, `m`) in
each parameter's dtype and device, and Adam's step count `iter` as a 0-D int32 array on
the parameters' device (a Python int would make a compiled step retrace, or bake in one
value). `optimizer.state` is all of it as one flat mapping ("v/W1", "iter", ...), which a
compiled step takes and gives back (`optimizer.state = new`); `init_state(params)` makes
it before the first update.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator

from array_api_compat import is_writeable_array

from ._backend import (
    device,
    fused_subtract_scaled,
    is_array,
    is_real_floating,
    library_name,
    namespace,
    resolve_namespace,
    same_shape,
    size,
    static_shape,
)

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


def _isub_scaled(x, scale, value):
    """`x -= scale * value`, written into `x` where it is writeable (in one torch kernel
    where `_backend.fused_subtract_scaled` has one); always use the result."""
    fused = fused_subtract_scaled(x, scale, value)
    return fused if fused is not None else _isub(x, scale * value)


def _imul(x, value):
    """`x *= value`, written into `x` where it is writeable; always use the result."""
    return _inplace(operator.mul, operator.imul, x, value)


# --- Gradient clipping ----------------------------------------------------------------

def global_norm(grads):
    """The L2 norm of all gradients together.

    It is computed as ``peak * ||g / peak||``, so float32 squares can neither overflow nor
    underflow.

    Parameters
    ----------
    grads : mapping or sequence of array
        The gradients; None entries and empty arrays are skipped.

    Returns
    -------
    array
        The norm, a 0-D array of the gradients' common dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import global_norm
    >>> float(global_norm({"W": np.array([3.0]), "b": np.array([4.0])}))
    5.0
    """
    arrays = [g for g in (grads.values() if hasattr(grads, "values") else grads)
              if g is not None]
    if not arrays:
        raise ValueError("global_norm needs at least one gradient array, got none")
    values = [g for g in arrays if size(g) != 0]
    if not values:  # every gradient empty: the norm of nothing
        xp = namespace(*arrays)
        return xp.zeros((), dtype=xp.result_type(*arrays), device=device(arrays[0]))
    xp = namespace(*values)
    dtype = xp.result_type(*values)
    values = [xp.astype(g, dtype, copy=False) for g in values]
    peak = functools.reduce(xp.maximum, [xp.max(xp.abs(g)) for g in values])
    scale = xp.where((peak > 0.0) & xp.isfinite(peak), peak, 1.0)  # 0, inf, nan: no scaling
    total = functools.reduce(operator.add, [xp.sum(xp.square(g / scale)) for g in values])
    return scale * xp.sqrt(total)


def clip_grad_norm(grads, max_norm):
    """Scale gradients down when their global norm exceeds `max_norm`.

    The factor is ``max_norm / (norm + 1e-6)``, as ``torch.nn.utils.clip_grad_norm_``.
    `grads` is unchanged; None entries stay None. Lazy-safe: the decision is an
    `xp.where`, not a Python `if`.

    Parameters
    ----------
    grads : dict
        Name to gradient (or None).
    max_norm : float
        The largest global L2 norm allowed, > 0.

    Returns
    -------
    clipped : dict
        New gradients, same keys.
    norm : array or None
        The global norm before clipping (None when there was no gradient).

    Raises
    ------
    TypeError
        For a `max_norm` that is not a real number.
    ValueError
        For a `max_norm` that is not positive and finite.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import clip_grad_norm
    >>> clipped, norm = clip_grad_norm({"W": np.array([3.0, 4.0])}, 1.0)
    >>> clipped["W"].round(4), float(norm)
    (array([0.6, 0.8]), 5.0)
    """
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
    `m`), sets `counts_steps` if it keeps a step count (`iter`), and implements
    ``_step(xp, name, param, grad) -> new param``.

    Parameters
    ----------
    lr : float
        The learning rate, >= 0.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    A plain gradient step, written as a subclass:

    >>> import numpy as np
    >>> from portablelayers.optim import Optimizer
    >>> class Halve(Optimizer):
    ...     def _step(self, xp, name, param, grad):
    ...         return param - self.lr * grad
    >>> params = {"W": np.array([1.0])}
    >>> Halve(lr=0.5).update(params, {"W": np.array([1.0])})
    >>> params["W"]
    array([0.5])
    """

    state_names: tuple[str, ...] = ()
    counts_steps = False

    def __init__(self, lr, clip_norm=None):
        self._lr_array = None  # lr as a 0-D array, from init_state on (see `lr`)
        self.lr = lr
        if clip_norm is not None:
            clip_norm = _number("clip_norm", clip_norm, lambda v: 0.0 < v < math.inf,
                                "> 0 and finite, or None")
        self.clip_norm = clip_norm
        for state in self.state_names:
            setattr(self, state, {})
        if self.counts_steps:
            self.iter = 0  # a 0-D int32 array from the first update (or init_state) on

    @property
    def lr(self):
        """The learning rate, a Python float.

        From `init_state` on, the steps read it from a 0-D array in `state["lr"]`, so a
        compiled step takes a new rate (a schedule's) as data instead of compiling anew.
        Setting `lr` writes that array in place where it can (a captured CUDA graph keeps
        reading the same buffer) and rebinds a new one elsewhere (JAX)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _non_negative("lr", value)
        rate = self._lr_array
        if rate is None:
            return
        if is_writeable_array(rate):
            rate[...] = self._lr
        else:
            xp = namespace(rate)
            self._lr_array = xp.full((), self._lr, dtype=rate.dtype, device=device(rate))

    def _rate(self, param):
        """The learning rate to multiply `param`'s gradient by: the 0-D array in the
        parameter's dtype once there is one, else the Python float."""
        rate = self._lr_array
        if rate is None:
            return self._lr
        return rate if rate.dtype == param.dtype else namespace(rate).astype(rate, param.dtype)

    def update(self, params, grads):
        """Update every `params[name]` that has a gradient in `grads`."""
        numbers_given = _python_numbers(params, grads)
        if numbers_given:  # the book's 2-D examples: numbers in, numbers out
            params, grads = numbers_given
        grads = self._checked_grads(params, grads)  # raises before anything changes
        if not grads:
            return
        if self.clip_norm is not None:
            grads, _ = clip_grad_norm(grads, self.clip_norm)
        self._begin_update(grads)
        for name, grad in grads.items():
            param = params[name]
            params[name] = self._step(namespace(param, grad), name, param, grad)
        if numbers_given:
            for name in grads:
                numbers_given.target[name] = float(params[name])

    # --- state as arrays ---------------------------------------------------------------

    def init_state(self, params):
        """Make every state array for `params` now (zeros, and a step count of 0), as the
        first update would: a compiled step needs them before it first runs."""
        for name, param in params.items():
            if not is_array(param):
                raise TypeError(f"params[{name!r}] must be an array, got "
                                f"{type(param).__name__}")
            for state in self.state_names:
                self._state(namespace(param), state, name, param)
        first = next(iter(params.values()), None)
        if self.counts_steps and first is not None:
            self._step_count(first)
        if self._lr_array is None and first is not None:
            # In the widest dtype of the parameters: a float32 rate, 0.1 as 0.10000000149,
            # would round a float64 parameter's steps.
            xp = namespace(first)
            dtype = xp.result_type(*(param.dtype for param in params.values()))
            self._lr_array = xp.full((), self._lr, dtype=dtype, device=device(first))

    @property
    def state(self):
        """All state as one flat dict: "v/W1"-style keys for the per-parameter arrays,
        "iter" for the step count (where the optimizer keeps one and it has begun) and "lr"
        for the learning rate as a 0-D array (from `init_state` on)."""
        flat = {f"{s}/{name}": value for s in self.state_names
                for name, value in getattr(self, s).items()}
        if self.counts_steps and is_array(self.iter):
            flat["iter"] = self.iter
        if self._lr_array is not None:
            flat["lr"] = self._lr_array
        return flat

    @state.setter
    def state(self, values):
        current = self.state
        if set(values) != set(current):
            raise ValueError(f"{type(self).__name__} state must have the keys "
                             f"{sorted(current)}, got {sorted(values)}")
        for key, value in values.items():
            if key == "iter":
                self.iter = value
            elif key == "lr":
                self._lr_array = value
            else:
                state, name = key.split("/", 1)
                getattr(self, state)[name] = value

    def _begin_update(self, grads):
        """Hook run once per update, after the checks (Adam counts its steps here)."""

    def _step_count(self, like):
        """`iter` as a 0-D int32 array on `like`'s device, made at the first update."""
        if not is_array(self.iter):
            xp = namespace(like)
            self.iter = xp.full((), int(self.iter), dtype=xp.int32, device=device(like))
        return self.iter

    def _state(self, xp, state, name, like):
        """The state array `state`[name], zeros like the parameter at the first step."""
        store = getattr(self, state)
        if name not in store:
            store[name] = xp.zeros_like(like)
        return store[name]

    def _checked_grads(self, params, grads):
        """{name: grad} for the names of `params` that have a gradient, each grad in its
        parameter's dtype; TypeError/ValueError on a mismatch."""
        unknown = [name for name in grads.keys() if name not in params.keys()]
        if unknown:
            raise ValueError(f"grads has {', '.join(map(repr, unknown))}, which name no "
                           f"parameter; params has {', '.join(map(repr, params.keys()))}")
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
                if not is_real_floating(xp, value.dtype):
                    raise TypeError(f"{what}[{name!r}] must be real floating, got dtype "
                                    f"{value.dtype} ({library_name(value)})")
            shape = static_shape(param)
            if grad.shape != param.shape and not same_shape(static_shape(grad), shape):
                raise ValueError(f"grads[{name!r}] has shape {tuple(grad.shape)}, but "
                                 f"params[{name!r}] has shape {tuple(param.shape)}")
            for state in self.state_names:
                old = getattr(self, state).get(name)
                if old is not None and old.shape != param.shape and not same_shape(
                        static_shape(old), shape):
                    raise ValueError(f"{type(self).__name__} state {state}[{name!r}] has shape "
                                     f"{tuple(old.shape)}, but params[{name!r}] now has shape "
                                     f"{tuple(param.shape)}; use a new optimizer for a new "
                                     f"network")
            # The update keeps the parameter's dtype (no promotion on rebinding backends).
            checked[name] = grad if grad.dtype == param.dtype else xp.astype(grad, param.dtype)
        return checked

    def __repr__(self):
        hyper = {"lr": self.lr, **{k: v for k, v in vars(self).items()
                                   if isinstance(v, float | int) and not k.startswith("_")
                                   and k != "iter"}}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in hyper.items())})"


class _NumbersGiven(tuple):
    """(params, grads) as NumPy 0-D arrays for an update given Python numbers, and the
    caller's dict (`target`) that gets the new numbers back."""

    target: dict


def _python_numbers(params, grads):
    """For the book's `params = {'x': -7.0, 'y': 2.0}` with number gradients: the same as
    0-D float64 NumPy arrays (state kept in the same form), else None."""
    first = next(iter(params.values()), None)
    if first is None or is_array(first):  # the usual case, decided by one look
        return None
    values = [*params.values(), *(g for g in grads.values() if g is not None)]
    if not values or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                             for v in values):
        return None
    xp = resolve_namespace(None)
    given = _NumbersGiven((
        {k: xp.asarray(float(v), dtype=xp.float64) for k, v in params.items()},
        {k: None if g is None else xp.asarray(float(g), dtype=xp.float64)
         for k, g in grads.items()}))
    given.target = params
    return given


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import SGD
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = SGD(lr=0.1)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.95, -0.95])
    """

    def __init__(self, lr=0.01, clip_norm=None):
        super().__init__(lr, clip_norm)

    def _step(self, xp, name, param, grad):
        return _isub_scaled(param, self._rate(param), grad)


class Momentum(Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * dW``, then ``W += v``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    momentum : float, default 0.9
        The decay of the velocity `v`, in [0, 1].
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import Momentum
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = Momentum(lr=0.1)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.95, -0.95])
    """

    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.momentum = _fraction("momentum", momentum)

    def _step(self, xp, name, param, grad):
        v = _imul(self._state(xp, "v", name, param), self.momentum)
        v = self.v[name] = _isub_scaled(v, self._rate(param), grad)
        return _iadd(param, v)


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the book's form (its common/optimizer.py):

        v = momentum * v - lr * dW
        W += momentum**2 * v - (1 + momentum) * lr * dW

    The book uses the *updated* v here; torch's SGD(nesterov=True) (Bengio et al. 2012,
    eq. 7) uses the previous one, so the two give different trajectories.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    momentum : float, default 0.9
        The decay of the velocity `v`, in [0, 1].
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import Nesterov
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = Nesterov(lr=0.1)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.8645, -0.8645])
    """

    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.momentum = _fraction("momentum", momentum)

    def _step(self, xp, name, param, grad):
        m = self.momentum
        v = _imul(self._state(xp, "v", name, param), m)
        v = self.v[name] = _isub_scaled(v, self._rate(param), grad)
        param = _iadd(param, m * m * v)
        return _isub_scaled(param, (1.0 + m) * self._rate(param), grad)


class AdaGrad(Optimizer):
    """AdaGrad: ``h += dW * dW``, then ``W -= lr * dW / (sqrt(h) + eps)``.

    Each weight gets its own learning rate, shrinking as its gradients add up.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    eps : float, default 1e-7
        Keeps the division finite (the book's value).
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import AdaGrad
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = AdaGrad(lr=0.1)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.9, -0.9])
    """

    state_names = ("h",)

    def __init__(self, lr=0.01, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.eps = _non_negative("eps", eps)  # the book's 1e-7: no division by zero

    def _step(self, xp, name, param, grad):
        h = self.h[name] = _iadd(self._state(xp, "h", name, param), grad * grad)
        return _isub(param, self._rate(param) * grad / (xp.sqrt(h) + self.eps))


class RMSprop(Optimizer):
    """RMSprop: AdaGrad with a decaying ``h = decay_rate * h + (1 - decay_rate) * dW * dW``.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate.
    decay_rate : float, default 0.99
        The decay of `h`, in [0, 1].
    eps : float, default 1e-7
        Keeps the division finite.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import RMSprop
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = RMSprop(lr=0.01)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.9, -0.9])
    """

    state_names = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.decay_rate = _fraction("decay_rate", decay_rate)
        self.eps = _non_negative("eps", eps)

    def _step(self, xp, name, param, grad):
        h = _imul(self._state(xp, "h", name, param), self.decay_rate)
        h = self.h[name] = _iadd(h, (1.0 - self.decay_rate) * grad * grad)
        return _isub(param, self._rate(param) * grad / (xp.sqrt(h) + self.eps))


class Adam(Optimizer):
    """Adam as the book writes it, the bias correction folded into the step size.

    Moving averages m and v of dW and dW**2 give the step:

        lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)
        W -= lr_t * m / (sqrt(v) + eps)

    (torch adds eps to sqrt(v) / sqrt(1 - beta2**iter) instead: the same for eps = 0.)

    Parameters
    ----------
    lr : float, default 0.001
        The learning rate.
    beta1, beta2 : float, default 0.9 and 0.999
        Decays of the moving averages m and v, in [0, 1].
    eps : float, default 1e-7
        Keeps the division finite.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import Adam
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = Adam(lr=0.1)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.9, -0.9])
    """

    state_names = ("m", "v")
    counts_steps = True

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _non_negative("eps", eps)
        self._lr_t = {}  # this update's step size, per parameter dtype

    def _begin_update(self, grads):
        first = next(iter(grads.values()))
        xp = namespace(first)
        self.iter = self._step_count(first) + 1
        # 1 - beta**t as -expm1(t * log(beta)): exact in float32 too, where 1 - beta**t
        # would lose most digits to cancellation at small t.
        self._lr_t = {}
        for dtype in {g.dtype for g in grads.values()}:
            t = xp.astype(self.iter, dtype)
            bias1 = -xp.expm1(t * _log(self.beta1))
            bias2 = -xp.expm1(t * _log(self.beta2))
            rate = self._lr if self._lr_array is None else xp.astype(self._lr_array, dtype)
            self._lr_t[dtype] = rate * xp.sqrt(bias2) / bias1

    def _step(self, xp, name, param, grad):
        m, v = self._state(xp, "m", name, param), self._state(xp, "v", name, param)
        m = self.m[name] = _iadd(m, (1.0 - self.beta1) * (grad - m))
        v = self.v[name] = _iadd(v, (1.0 - self.beta2) * (grad * grad - v))
        return _isub(param, self._lr_t[param.dtype] * m / (xp.sqrt(v) + self.eps))


def _log(beta):
    """log(beta), -inf for beta = 0 (so that 1 - beta**t = 1 for every step t >= 1)."""
    return math.log(beta) if beta > 0.0 else -math.inf


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; ``torch.optim.AdamW``).

    Before the Adam step, ``W *= 1 - lr * weight_decay``. The decay does not pass through
    m and v, unlike an L2 term added to the loss.

    Parameters
    ----------
    lr : float, default 0.001
        The learning rate.
    beta1, beta2 : float, default 0.9 and 0.999
        Decays of the moving averages m and v, in [0, 1].
    weight_decay : float, default 0.01
        The decoupled decay, >= 0.
    eps : float, default 1e-7
        Keeps the division finite.
    clip_norm : float, optional
        Clip the gradients' global L2 norm to this value before the step (None: no
        clipping).

    Raises
    ------
    TypeError
        For a hyper-parameter that is not a real number.
    ValueError
        For a hyper-parameter out of its range (negative `lr`, a fraction outside [0, 1],
        ...); from `update`, for a gradient whose name or shape matches no parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.optim import AdamW
    >>> params, grads = {"W": np.array([1.0, -1.0])}, {"W": np.array([0.5, -0.5])}
    >>> opt = AdamW(lr=0.1, weight_decay=0.5)
    >>> opt.update(params, grads)
    >>> params["W"].round(4)
    array([ 0.85, -0.85])
    """

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, weight_decay=0.01, eps=1e-7,
                 clip_norm=None):
        super().__init__(lr, beta1, beta2, eps, clip_norm)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def _step(self, xp, name, param, grad):
        param = _imul(param, 1.0 - self._rate(param) * self.weight_decay)
        return super()._step(xp, name, param, grad)

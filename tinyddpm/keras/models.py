"""Keras' ``Model`` (functional, or subclassed with ``call()``) and ``Sequential``, over
:class:`tinyddpm.Model` (``compile``, ``fit``, ``evaluate``, ``predict``, checkpoints)."""
from __future__ import annotations

import re

import numpy as np

from .. import model as _model
from .. import symbolic
from ..nn import Module, _takes_training
from ..symbolic import SymbolicTensor


def _snake(name):
    """Keras' default layer names: Conv2D -> conv2d, ZeroPadding2D -> zero_padding2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Model(_model.Model):
    """``Model(inputs=[...], outputs=[...])`` from symbolic tensors (the functional API), or a
    subclass that sets its layers in ``__init__`` and computes in ``call(inputs)``.

    Called on a dict, the inputs are matched by their ``Input`` names; on a list, by position.
    """

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"Model: tinyddpm does not take {', '.join(sorted(kwargs))} (it "
                            "takes inputs, outputs, name)")
        super().__init__(name)
        object.__setattr__(self, "_graph", None)
        if inputs is not None or outputs is not None:
            self._connect(inputs, outputs)

    def _connect(self, inputs, outputs):
        ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for what, tensors in (("inputs", ins), ("outputs", outs)):
            if not tensors or not all(isinstance(t, SymbolicTensor) for t in tensors):
                raise TypeError(f"Model: {what} must be symbolic tensors (from Input and the "
                                f"layers called on it), got {tensors!r}")
        if any(t.fn is not None for t in ins):
            raise ValueError("Model: inputs must be the tensors Input(...) returned")
        order = symbolic.trace(outs)
        missing = [t for t in order if t.fn is None and not any(t is i for i in ins)]
        if missing:
            raise ValueError(f"Model: the outputs depend on an Input that is not among the "
                             f"inputs: {missing[0]!r}")
        taken = set()
        for t in order:
            if isinstance(t.fn, Module) and not any(t.fn is m for m in self._modules.values()):
                base = t.fn.name or _snake(type(t.fn).__name__)
                name, k = base, 0
                while name in taken or hasattr(type(self), name):
                    k += 1
                    name = f"{base}_{k}"
                taken.add(name)
                setattr(self, name, t.fn)
        single = not isinstance(outputs, (list, tuple))
        object.__setattr__(self, "_graph", (ins, outs, order, single))
        self.built = True

    def forward(self, inputs, *args, **kwargs):
        if self._graph is None:
            if _takes_training(type(self).call):
                kwargs.setdefault("training", self.training)
            return self.call(inputs, *args, **kwargs)
        ins, outs, order, single = self._graph
        values = symbolic.run(order, self._feeds(inputs, ins))
        results = [values[id(o)] for o in outs]
        return results[0] if single or len(results) == 1 else results

    @staticmethod
    def _feeds(inputs, ins):
        if isinstance(inputs, dict):
            names = [t.name for t in ins]
            missing = [n for n in names if n not in inputs]
            unknown = sorted(set(inputs) - set(names))
            if missing or unknown:
                raise ValueError(f"Model: the inputs are named {names}; missing {missing}, "
                                 f"unknown {unknown}")
            return {id(t): inputs[t.name] for t in ins}
        values = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(values) != len(ins):
            raise ValueError(f"Model: expected {len(ins)} inputs "
                             f"{[t.name for t in ins]}, got {len(values)}")
        return {id(t): v for t, v in zip(ins, values)}

    def call(self, inputs):
        raise NotImplementedError("a Model subclass computes in call(inputs); or build a model "
                                  "from Input(...): Model(inputs, outputs)")

    # --- what Keras users reach for --------------------------------------------------------
    @property
    def layers(self):
        """The model's layers, in the order they were added."""
        return list(self._modules.values())

    def get_layer(self, name):
        for key, layer in self._modules.items():
            if name in (key, layer.name):
                return layer
        raise ValueError(f"no layer named {name!r}; the layers are {list(self._modules)}")

    def save_weights(self, path):
        """The weights (and BatchNorm statistics) to a checkpoint file (``load_weights``)."""
        from ..checkpoint import save_checkpoint
        return save_checkpoint(path, self)

    def load_weights(self, path):
        from ..checkpoint import load_checkpoint
        load_checkpoint(path, self)

    def summary(self, print_fn=print):
        """A table of the layers and their weights, as Keras prints it."""
        self._require_built("summary()")
        width = max([len(k) + len(type(m).__name__) + 3 for k, m in self._modules.items()]
                    + [20])
        print_fn(f'Model: "{self.name or type(self).__name__}"')
        print_fn(f"{'Layer (type)':<{width}} {'Param #':>10}")
        for key, m in self._modules.items():
            params = sum(p.size for p in m.parameters()) + sum(b.size for _, b in m.named_buffers())
            print_fn(f"{f'{key} ({type(m).__name__})':<{width}} {params:>10,}")
        trainable = sum(p.size for _, p in self.named_trainable_parameters())
        total = self.count_params()
        print_fn(f"Total params: {total:,}\nTrainable params: {trainable:,}\n"
                 f"Non-trainable params: {total - trainable:,}")


class Sequential(Model):
    """Layers applied one after the other: ``Sequential([Input(shape), Dense(8), ...])`` or
    ``model.add(layer)``. With a leading ``Input`` the weights are built at once."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name)
        object.__setattr__(self, "_input", None)
        for layer in layers or ():
            self.add(layer)

    def add(self, layer):
        if isinstance(layer, SymbolicTensor):
            if self._modules or self._input is not None:
                raise ValueError("Sequential: an Input goes first")
            object.__setattr__(self, "_input", layer)
            return
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add: expected a layer, got {type(layer).__name__}")
        base = layer.name or _snake(type(layer).__name__)
        name, k = base, 0
        while name in self._modules or hasattr(type(self), name):
            k += 1
            name = f"{base}_{k}"
        setattr(self, name, layer)
        if self._input is not None:  # build now, as Keras does with a known input shape
            x = self._input
            for m in self._modules.values():
                x = m(x)

    def forward(self, x, *args, **kwargs):
        for layer in self._modules.values():
            x = layer(x)
        return x

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
        for t in order:
            if isinstance(t.fn, Module) and not any(t.fn is m for m in self._modules.values()):
                self._add_layer(t.fn)
        single = not isinstance(outputs, (list, tuple))
        object.__setattr__(self, "_graph", (ins, outs, order, single))
        self.built = True

    def _add_layer(self, layer):
        """Register ``layer`` under its name (Keras' default from its class), with a suffix
        where the name is taken, by a layer or by an attribute of the model."""
        base = layer.name or _snake(type(layer).__name__)
        name, k = base, 0
        while name in self.__dict__ or name in self._modules or hasattr(type(self), name):
            k += 1
            name = f"{base}_{k}"
        setattr(self, name, layer)

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
        object.__setattr__(self, "_seen", None)  # (shape, dtype) of the first input, if no Input
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
        self._add_layer(layer)
        if self._input is not None:  # build now, as Keras does with a known input shape
            x = self._input
            for m in self._modules.values():
                x = m(x)

    def forward(self, x, *args, **kwargs):
        if self._seen is None:
            data = np.asarray(getattr(x, "data", x))
            object.__setattr__(self, "_seen", (data.shape[1:], str(data.dtype)))
        for layer in self._modules.values():
            x = layer(x)
        return x


# --------------------------------------------------------------------------- save / load_model
# A saved model is a checkpoint (weights, JSON header, never pickled) whose header also holds
# "keras_model": each layer's class and the arguments it was made with, and the recorded graph
# (inputs, layer calls and the slicing and arithmetic between them), so load_model can rebuild it.



def _encode(value, nodes, where):
    if isinstance(value, SymbolicTensor):
        return {"node": nodes[id(value)]}
    if isinstance(value, slice):
        return {"slice": [_encode(v, nodes, where) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, nodes, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, nodes, where) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, nodes, where) for k, v in value.items()}}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save(): {where} holds a {type(value).__name__} ({value!r:.60}), which a "
                    "saved model cannot describe; save the weights with save_weights instead")


def _decode(value, nodes):
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if isinstance(value, dict):
        if "node" in value:
            return nodes[value["node"]]
        if "slice" in value:
            return slice(*_decode(value["slice"], nodes))
        if "ellipsis" in value:
            return Ellipsis
        if "tuple" in value:
            return tuple(_decode(v, nodes) for v in value["tuple"])
        return {k: _decode(v, nodes) for k, v in value["dict"].items()}
    return value


def _describe(model):
    layers = []
    for key, layer in model._modules.items():
        if isinstance(layer, _model.Model):
            raise TypeError(f"save(): the model {key!r} is used as a layer inside this one, which "
                            "a saved file cannot describe yet; use save_weights, and rebuild "
                            "the model in code")
        args, kwargs = getattr(layer, "init_args", ((), {}))
        layers.append({"key": key, "class": type(layer).__name__, "trainable": layer.trainable,
                       "args": _encode(list(args), {}, f"layer {key!r}"),
                       "kwargs": _encode(dict(kwargs), {}, f"layer {key!r}")["dict"]})
    if isinstance(model, Sequential):
        first = model._input
        if first is None and model._seen is not None:  # built by a call: that input's shape
            shape, dtype = model._seen
            return {"kind": "sequential", "layers": layers,
                    "input": {"shape": list(shape), "dtype": dtype, "name": None}}
        if first is None:
            raise ValueError("save(): this Sequential model has not been built yet: give it an "
                             "Input, or call it on a batch first")
        return {"kind": "sequential", "layers": layers, "input":
                {"shape": list(first.shape[1:]), "dtype": str(first.dtype), "name": first.name}}
    if model._graph is None:
        raise TypeError("save(): a subclassed model (one with call()) cannot be described in a "
                        "file; save its weights with save_weights, and rebuild it in code")
    ins, outs, order, single = model._graph
    keys = {id(m): k for k, m in model._modules.items()}
    nodes, graph = {}, []
    for t in order:
        nodes[id(t)] = len(graph)
        if t.fn is None:
            graph.append({"input": {"shape": list(t.shape[1:]), "dtype": str(t.dtype),
                                    "name": t.name}})
        elif id(t.fn) in keys:
            graph.append({"layer": keys[id(t.fn)], "args": _encode(list(t.args), nodes, "a call"),
                          "kwargs": _encode(dict(t.kwargs), nodes, "a call")["dict"]})
        else:
            graph.append({"op": t.fn.__name__, "args": _encode(list(t.args), nodes, "an op")})
    return {"kind": "functional", "layers": layers, "graph": graph,
            "inputs": [nodes[id(t)] for t in ins], "outputs": [nodes[id(t)] for t in outs],
            "single_output": single}


def save_model(model, path):
    """Write ``model`` (weights, BatchNorm statistics, optimizer state and its description) to
    one ``.npz`` file, atomically, with no pickled object in it: ``load_model(path)`` rebuilds
    it. Functional and Sequential models; a subclassed one only through ``save_weights``."""
    from ..checkpoint import save_checkpoint
    return save_checkpoint(path, model, model.optimizer, extra={"keras_model": _describe(model)})


def load_model(path, custom_objects=None):
    """The model ``save`` wrote, rebuilt and loaded (inference mode, not compiled: call
    ``compile`` to train it further). Layer classes of your own go in ``custom_objects``
    (``{"TimeEncoding": TimeEncoding}``), as in Keras."""
    from ..checkpoint import CheckpointError, load_checkpoint, read_checkpoint
    from . import layers as known

    desc = read_checkpoint(path)[0].get("keras_model")
    if not isinstance(desc, dict):
        raise CheckpointError(f"{str(path)!r} holds no model description: it was not written by "
                              "model.save (a checkpoint or save_weights file loads into a model "
                              "you build, with load_weights)")
    custom = dict(custom_objects or {})
    built = {}
    for spec in desc["layers"]:
        cls = custom.get(spec["class"]) or getattr(known, spec["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise ValueError(f"load_model: unknown layer class {spec['class']!r}; pass it in "
                             f"custom_objects={{{spec['class']!r}: {spec['class']}}}")
        layer = cls(*_decode(spec["args"], []), **_decode({"dict": spec["kwargs"]}, []))
        layer.name = spec["key"]
        layer.trainable = spec.get("trainable", True)
        built[spec["key"]] = layer
    if desc["kind"] == "sequential":
        first = desc["input"]
        start = [] if first is None else [symbolic.Input(first["shape"], first["name"],
                                                         first["dtype"])]
        model = Sequential(start + list(built.values()))
    else:
        nodes = []
        for node in desc["graph"]:
            if "input" in node:
                spec = node["input"]
                nodes.append(symbolic.Input(spec["shape"], spec["name"], spec["dtype"]))
            elif "layer" in node:
                nodes.append(built[node["layer"]](*_decode(node["args"], nodes),
                                                   **_decode({"dict": node["kwargs"]}, nodes)))
            else:
                if node["op"] not in symbolic.OPERATIONS:
                    raise CheckpointError(f"{str(path)!r}: unknown operation {node['op']!r}")
                nodes.append(symbolic.apply(symbolic.OPERATIONS[node["op"]],
                                            *_decode(node["args"], nodes)))
        outputs = [nodes[i] for i in desc["outputs"]]
        model = Model(inputs=[nodes[i] for i in desc["inputs"]],
                      outputs=outputs[0] if desc["single_output"] else outputs)
    load_checkpoint(path, model)
    return model


Model.save = save_model

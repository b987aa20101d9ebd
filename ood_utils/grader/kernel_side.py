"""The grader's snippet inside a student's kernel: call a function, hand back plain data.

This file is *source text* that the grader sends into the sandboxed kernel after a graded cell
(it is never imported by the grader itself; from :mod:`ood_utils` it imports only the loader
of the shipped tiny CLIP, which a check hands over by name, and what a probe imports). It runs
in the student's interpreter, so nothing it does is trusted: it only turns the grader's
request into a call and the call's result into files. The grader decides every grade from
those files alone (:mod:`ood_utils.grader.exchange`).

Request (``<dir>/request.json``, written by the grader), one of::

    {"op": "call", "fn": NAME, "args": [SPEC, ...], "kwargs": {KEY: SPEC}}
    {"op": "capture", "exprs": {KEY: PYTHON EXPRESSION}}
    {"op": "run", "source": PYTHON SOURCE, "entry": NAME, "args": [SPEC], "kwargs": {...}}

``run`` executes the source of a grader's probe (a self-contained function of
:mod:`ood_utils.answer_key.checks`) and calls ``entry(user_ns, *args, **kwargs)``: how a check
whose inputs are objects (a network class, a training loop) gets plain values out of them.

Answer (``<dir>/out/answer.json``, written last), ``{"ok": true, "value": SPEC, "grads": ...}``
or ``{"ok": false, "error": {"type": NAME, "message": TEXT}}``. A SPEC is plain JSON:
``{"t": "none"}``, ``{"t": "json", "v": number/str/bool}``, ``{"t": "array", "file": "v3.npy",
"torch": bool, "grad": bool}`` (numeric NumPy file, read with ``allow_pickle=False``),
``{"t": "list"|"tuple", "items": [SPEC]}``, ``{"t": "dict", "items": [[SPEC, SPEC]]}``,
``{"t": "linear", "weight": SPEC, "bias": SPEC}`` (a ``torch.nn.Linear``),
``{"t": "tiny_clip", "part": "model"|"tokenizer"}`` (grader to kernel only: the shipped tiny
CLIP, which the kernel loads itself),
``{"t": "other", "type": NAME}`` (anything else: the grader treats it as a wrong answer).
"""
GRADER_SOURCE = r'''
def _ood_grader_main(user_ns, folder):
    import json as _json
    import os as _os
    import numpy as _np
    try:
        import torch as _torch
    except Exception:
        _torch = None
    out = _os.path.join(folder, "out")
    _os.makedirs(out, exist_ok=True)
    count = [0]
    clip = {}

    def save(a):
        name = "v%d.npy" % count[0]
        count[0] += 1
        _np.save(_os.path.join(out, name), _np.ascontiguousarray(a), allow_pickle=False)
        return name

    def load(spec, grads):
        t = spec["t"]
        if t == "none":
            return None
        if t == "json":
            return spec["v"]
        if t == "array":
            a = _np.load(_os.path.join(folder, spec["file"]), allow_pickle=False)
            if spec.get("torch"):
                x = _torch.from_numpy(a.copy())
                if spec.get("grad"):
                    x.requires_grad_(True)
                    grads.append((spec["file"], x))
                return x
            return a
        if t == "tiny_clip":  # a fresh copy of the shipped tiny CLIP, loaded here
            if "clip" not in clip:
                from ood_utils.course.models import load_clip
                m, _, tok = load_clip("miniclip")
                clip["clip"] = {"model": m, "tokenizer": tok}
            return clip["clip"][spec["part"]]
        if t in ("list", "tuple"):
            items = [load(s, grads) for s in spec["items"]]
            return items if t == "list" else tuple(items)
        if t == "dict":
            return {load(k, grads): load(v, grads) for k, v in spec["items"]}
        if t == "linear":
            w, b = load(spec["weight"], []), load(spec["bias"], [])
            layer = _torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with _torch.no_grad():
                layer.weight.copy_(w)
                if b is not None:
                    layer.bias.copy_(b)
            return layer
        raise ValueError("unknown spec %r" % (t,))

    def dump(x, depth=0):
        if depth > 8:
            return {"t": "other", "type": "nested too deeply"}
        if x is None:
            return {"t": "none"}
        if isinstance(x, (bool, int, float, str)) and type(x) in (bool, int, float, str):
            return {"t": "json", "v": x}
        if _torch is not None and type(x) is _torch.nn.Linear:
            return {"t": "linear", "weight": dump(x.weight.detach()),
                    "bias": dump(None if x.bias is None else x.bias.detach())}
        if _torch is not None and isinstance(x, _torch.Tensor):
            a = x.detach().cpu().numpy()
            return {"t": "array", "file": save(a), "torch": True, "grad": bool(x.requires_grad),
                    "dtype": str(x.dtype).replace("torch.", "")}
        if isinstance(x, _np.ndarray) or isinstance(x, _np.generic):
            a = _np.asarray(x)
            if a.dtype.kind not in "biuf":
                return {"t": "other", "type": "array of dtype " + str(a.dtype)}
            return {"t": "array", "file": save(a), "torch": False, "grad": False,
                    "dtype": str(a.dtype)}
        if type(x) in (list, tuple):
            return {"t": type(x).__name__, "items": [dump(i, depth + 1) for i in x]}
        if isinstance(x, dict):
            return {"t": "dict", "items": [[dump(k, depth + 1), dump(v, depth + 1)]
                                           for k, v in x.items()]}
        return {"t": "other", "type": type(x).__name__}

    def finish(answer):
        tmp = _os.path.join(out, "answer.json.tmp")
        with open(tmp, "w") as fh:
            fh.write(_json.dumps(answer))
        _os.replace(tmp, _os.path.join(out, "answer.json"))

    try:
        with open(_os.path.join(folder, "request.json")) as fh:
            req = _json.load(fh)
        if req["op"] == "capture":
            value = {k: eval(e, user_ns) for k, e in req["exprs"].items()}
            finish({"ok": True, "value": dump(value)})
            return
        if req["op"] == "run":
            # a probe of the grader's: its source comes with the request, it gets the
            # namespace and the grader's inputs and returns plain values
            g = {}
            exec(compile(req["source"], "<grader-probe>", "exec"), g)
            args = [load(s, []) for s in req["args"]]
            kwargs = {k: load(s, []) for k, s in req["kwargs"].items()}
            finish({"ok": True, "value": dump(g[req["entry"]](user_ns, *args, **kwargs))})
            return
        fn = user_ns.get(req["fn"])
        if fn is None:
            raise NameError("name %r is not defined" % req["fn"])
        grads = []
        args = [load(s, grads) for s in req["args"]]
        kwargs = {k: load(s, grads) for k, s in req["kwargs"].items()}
        result = fn(*args, **kwargs)
        answer = {"ok": True, "value": dump(result), "grads": {}}
        # gradients of sum(result) (or of each tensor of a tuple) with respect to the inputs
        # that asked for them: the grader rebuilds a graph with exactly these gradients
        tensors = [result] if _torch is not None and isinstance(result, _torch.Tensor) else []
        if grads and tensors and tensors[0].requires_grad:
            xs = [x for _, x in grads]
            gs = _torch.autograd.grad(tensors[0].sum(), xs, allow_unused=True)
            for (name, _), g in zip(grads, gs):
                if g is not None:
                    answer["grads"][name] = dump(g)
        finish(answer)
    except BaseException as err:  # the grader reads the name; it decides nothing from it
        try:
            finish({"ok": False, "error": {"type": type(err).__name__,
                                           "message": str(err)[:2000]}})
        except BaseException:
            pass
'''


def snippet(folder: str) -> str:
    """The code of one grader step in the kernel (defines nothing in the student's namespace)."""
    return ("_ood_g = {}\n"
            "exec(compile(" + repr(GRADER_SOURCE) + ", '<grader>', 'exec'), _ood_g)\n"
            "_ood_g['_ood_grader_main'](get_ipython().user_ns, " + repr(str(folder)) + ")\n"
            "del _ood_g\n")

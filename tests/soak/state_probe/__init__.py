"""Test-only custom node folder for the soak test (tests/soak/test_soak.py): linked into the
test server's custom_nodes/ next to the pack, never shipped with it.

"Soak State Probe" takes a MODEL and reports, as JSON (its ui text and its STRING output), every
piece of AI-T2I state it finds on it, so the soak can check that a model the server's cache keeps
(the tiny model loader's output, reused by every prompt) carries none after guided runs, cancels
included. What the pack can leave on a model, from its host adapter (nodes/host/):

* model_options keys starting with "ai_t2i" (the attention patch's marker) and the same in
  transformer_options (the recorder that only a guidance pass's copy of the options may hold);
* anything defined in the pack's own source files anywhere in the patcher's options, patches,
  wrappers, callbacks, attachments and injections: its cross-attention hooks in patches_replace
  attn1/attn2, the skip-copy patch, the attention override of the guidance pass;
* on the model's modules: autograd-capable parameters or buffers with requires_grad True, and any
  .grad (the guidance backward runs through the UNet, whose inference-tensor weights it swaps for
  ordinary tensors with requires_grad False: left True, every guided step would accumulate a
  weight gradient), forward/backward hooks, instance-level forward overrides, and attributes
  holding pack objects or named ai_t2i*;
* globally: torch's module-wide hooks, grad mode switched on inside a node, and host functions or
  class methods replaced by pack code.

What the probe looks for is generic (names and source files), so it needs no import of the pack.
Not state, and listed apart as "definition": the tiny model's own config and latent format on the
BaseModel (the pack's loader builds the model from them, as a checkpoint loader does from the
host's), and parameters that are still the host's inference tensors (requires_grad True there is
the host's default and cannot reach autograd).

"Soak State Leaver" exists to show the probe can fail: it leaves a forward hook, a parameter with
requires_grad and a .grad on the shared UNet of a model ('leave'), and removes them ('undo').
"""
from __future__ import annotations

import functools
import json
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.realpath(__file__))
# This folder is tests/soak/state_probe inside the pack's checkout.
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
# The code the pack ships. Not the whole checkout: a development checkout also holds the host
# itself (.host/) and the virtual environment, whose objects are not the pack's.
PACK_SOURCES = tuple(os.path.join(PACK_ROOT, d) + os.sep for d in ("nodes", "ai_t2i_attention"))
PACK_INIT = os.path.join(PACK_ROOT, "__init__.py")
PREFIX = "ai_t2i"
MAX_DEPTH = 14
MAX_FINDINGS = 200
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks")
HOST_MODULES = ("comfy.ldm.modules.attention", "comfy.ldm.modules.diffusionmodules.openaimodel", "comfy.samplers",
                "comfy.sample", "comfy.k_diffusion.sampling", "comfy.model_management", "comfy.model_patcher",
                "comfy.model_base", "comfy.utils", "comfy.patcher_extension", "latent_preview")
# BaseModel attributes a loader sets from the model's config: the tiny model's are the pack's classes.
DEFINITION = ("latent_format", "model_config")
# The patcher's attributes that are not options: the module itself (walked as modules), its
# parent patcher (probed on its own), weight backups and bookkeeping.
PATCHER_SKIP = {"model", "parent", "backup", "hook_backup", "pinned", "cached_hook_patches", "patches_uuid",
                "load_device", "offload_device", "size"}

_file_cache: dict = {}
_real_cache: dict = {}


def _source_file(obj):
    """The source file that defines obj (a function, method, partial, class or instance), or None."""
    try:
        if isinstance(obj, functools.partial):
            return _source_file(obj.func)
        if isinstance(obj, types.MethodType):
            return _source_file(obj.__func__)
        if isinstance(obj, types.FunctionType):
            return obj.__code__.co_filename
        cls = obj if isinstance(obj, type) else type(obj)
        name = getattr(cls, "__module__", None)
        if name in _file_cache:
            return _file_cache[name]
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        _file_cache[name] = path
        return path
    except Exception:  # an object that refuses introspection is not the pack's
        return None


def is_pack_object(obj) -> bool:
    """True for objects (or their classes) defined in the pack's shipped source files."""
    path = _source_file(obj)
    if not path:
        return False
    if path not in _real_cache:
        real = os.path.realpath(path)
        _real_cache[path] = real.startswith(PACK_SOURCES) or real == PACK_INIT
    return _real_cache[path]


def _describe(obj) -> str:
    cls = type(obj)
    # The host names a custom node's modules after their path: keep the part from the folder on.
    if isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
        func = obj.func if isinstance(obj, functools.partial) else obj
        module = os.path.basename(str(getattr(func, "__module__", "?")))
        return f"function {module}.{getattr(func, '__qualname__', repr(func))}"
    if isinstance(obj, type):
        return f"class {os.path.basename(str(obj.__module__))}.{obj.__qualname__}"
    module = os.path.basename(str(cls.__module__))
    text = f"{module}.{cls.__qualname__}"
    for attr in ("key", "wrapped"):  # the pack's cross-attention hook: its slot, and what it wraps
        if attr in getattr(obj, "__dict__", {}):
            value = obj.__dict__[attr]
            text += f" {attr}={value!r}" if attr == "key" else f" {attr}={'None' if value is None else type(value).__name__}"
    return text


class Probe:
    def __init__(self):
        self.findings: list[dict] = []
        self.definition: list[dict] = []
        self.seen: set[int] = set()

    def add(self, kind: str, where: str, what: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append({"kind": kind, "where": where, "what": what})

    def walk(self, where: str, obj, depth: int = 0) -> None:
        """Options-like data: dicts, lists, tuples and the host's small objects in them."""
        if depth > MAX_DEPTH or obj is None or isinstance(obj, (str, bytes, int, float, bool, torch.Tensor,
                                                                 types.ModuleType)):
            return
        if isinstance(obj, (type, torch.nn.Module)):  # classes and networks: only whose they are
            if is_pack_object(obj):
                self.add("pack_object", where, _describe(obj))
            return
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if is_pack_object(obj):
            self.add("pack_object", where, _describe(obj))
            inner = getattr(obj, "__dict__", None)
            if isinstance(inner, dict):  # e.g. a hook that wraps another pack hook
                for k, v in inner.items():
                    self.walk(f"{where}.{k}", v, depth + 1)
            return
        if isinstance(obj, dict):
            for k, v in list(obj.items()):
                if isinstance(k, str) and k.startswith(PREFIX):
                    self.add("key", f"{where}[{k!r}]", f"{type(v).__name__} {_short(v)}")
                    continue
                if is_pack_object(k):
                    self.add("pack_object", f"{where} key {k!r}", _describe(k))
                self.walk(f"{where}[{k!r}]", v, depth + 1)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for i, v in enumerate(obj):
                self.walk(f"{where}[{i}]", v, depth + 1)
        elif isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
            if isinstance(obj, types.MethodType):
                self.walk(f"{where}.__self__", obj.__self__, depth + 1)
            for i, cell in enumerate(getattr(obj, "__closure__", None) or ()):
                try:
                    self.walk(f"{where}.<closure {i}>", cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
        else:
            inner = getattr(obj, "__dict__", None)
            module = getattr(type(obj), "__module__", "") or ""
            if isinstance(inner, dict) and (module.startswith("comfy") or module.startswith("comfy_")):
                for k, v in list(inner.items()):
                    if isinstance(k, str) and k.startswith(PREFIX):
                        self.add("key", f"{where}.{k}", f"{type(v).__name__} {_short(v)}")
                    else:
                        self.walk(f"{where}.{k}", v, depth + 1)

    def patcher(self, patcher) -> None:
        for name, value in list(vars(patcher).items()):
            if name in PATCHER_SKIP:
                continue
            if name.startswith(PREFIX):
                self.add("key", f"patcher.{name}", f"{type(value).__name__} {_short(value)}")
            else:
                self.walk(name, value)

    def modules(self, root: torch.nn.Module) -> dict:
        grads, trainable, inference = [], [], 0
        for name, module in root.named_modules():
            where = f"module {name or '(root)'} ({type(module).__name__})"
            for attr in HOOK_DICTS:
                hooks = getattr(module, attr, None)
                if hooks:
                    self.add("hook", where, f"{attr}: " + ", ".join(_describe(h) for h in hooks.values()))
            if "forward" in module.__dict__:
                self.add("forward_override", where, _describe(module.__dict__["forward"]))
            for k, v in module.__dict__.items():
                if k.startswith("_") or k in ("forward", "training"):
                    continue
                if module is root and k in DEFINITION:
                    self.definition.append({"where": f"{where}.{k}", "what": _describe(v)})
                    continue
                if k.startswith(PREFIX):
                    self.add("key", f"{where}.{k}", f"{type(v).__name__} {_short(v)}")
                elif not isinstance(v, (torch.Tensor, torch.nn.Module)):
                    self.walk(f"{where}.{k}", v, depth=MAX_DEPTH - 2)
            for pname, p in module.named_parameters(recurse=False):
                full = f"{name}.{pname}" if name else pname
                if p.is_inference():
                    inference += 1
                elif p.requires_grad:
                    trainable.append(full)
                if p.grad is not None:
                    grads.append(full)
            for bname, b in module.named_buffers(recurse=False):
                if b is not None and b.requires_grad and not b.is_inference():
                    trainable.append(f"{name}.{bname} (buffer)")
        if trainable:
            self.add("requires_grad", "model parameters", f"{len(trainable)} autograd-capable with requires_grad "
                     "True, e.g. " + ", ".join(trainable[:5]))
        if grads:
            self.add("grad", "model parameters", f"{len(grads)} holding a .grad, e.g. " + ", ".join(grads[:5]))
        if inference:
            self.definition.append({"where": "model parameters", "what": f"{inference} still the host's inference "
                                    "tensors"})
        return {"parameters": sum(1 for _ in root.parameters()), "modules": sum(1 for _ in root.modules())}

    def globals(self) -> None:
        from torch.nn.modules import module as torch_module
        for attr in GLOBAL_HOOKS:
            hooks = getattr(torch_module, attr, None)
            if hooks:
                self.add("hook", f"torch.nn.modules.module.{attr}", ", ".join(_describe(h) for h in hooks.values()))
        if torch.is_grad_enabled():
            self.add("global", "torch.is_grad_enabled()", "grad mode is on inside a node (the host runs nodes "
                     "under inference mode)")
        for name in HOST_MODULES:
            module = sys.modules.get(name)
            if module is None:
                continue
            for attr, value in list(vars(module).items()):
                if is_pack_object(value) and not isinstance(value, types.ModuleType):
                    self.add("host_replaced", f"{name}.{attr}", _describe(value))
                elif isinstance(value, type) and getattr(value, "__module__", None) == name:
                    for cattr, cvalue in list(vars(value).items()):
                        if is_pack_object(cvalue):
                            self.add("host_replaced", f"{name}.{attr}.{cattr}", _describe(cvalue))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def probe_model(model) -> dict:
    """The report on a ModelPatcher: {"findings": [...], "model_id", "module_id", ...}."""
    probe = Probe()
    probe.patcher(model)
    sizes = probe.modules(model.model)
    probe.globals()
    return {"findings": probe.findings, "definition": probe.definition, "model_id": id(model),
            "module_id": id(model.model),
            "diffusion_model_id": id(getattr(model.model, "diffusion_model", None)),
            "model_type": type(model).__name__, **sizes}


def probe_clip(clip) -> dict:
    """The same on a CLIP (its patcher, text encoder and tokenizer). The tiny model's text encoder
    and tokenizer are the pack's classes, so a test compares this with the fresh CLIP's report."""
    probe = Probe()
    probe.patcher(clip.patcher)
    probe.modules(clip.patcher.model)
    for name, value in vars(clip).items():
        if name not in ("patcher", "cond_stage_model"):
            probe.walk(f"clip.{name}", value)
    return {"clip_findings": probe.findings, "clip_id": id(clip)}


class SoakStateProbe:
    DESCRIPTION = "Test-only: reports any AI-T2I state on a MODEL (see tests/soak/state_probe)."
    CATEGORY = "testing/soak"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "probe"})},
                "optional": {"after": ("LATENT", {"tooltip": "Only orders the probe after the node giving it."}),
                             "clip": ("CLIP", {"tooltip": "Also report on this CLIP."})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # always run: the state to look at changes without the inputs changing

    def probe(self, model, label, after=None, clip=None):
        report = {"label": label, **probe_model(model), **(probe_clip(clip) if clip is not None else {})}
        text = json.dumps(report)
        return {"ui": {"text": [text]}, "result": (model, text)}


_left: dict = {}


def _leak_hook(module, args, output):
    return None


class SoakStateLeaver:
    DESCRIPTION = "Test-only: leaves (or removes) a forward hook and gradient state on a MODEL's shared UNet."
    CATEGORY = "testing/soak"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "mode": (["leave", "undo"],)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def apply(self, model, mode):
        target = next(m for m in model.model.diffusion_model.modules() if isinstance(m, torch.nn.Conv2d))
        if mode == "leave" and not _left:
            with torch.inference_mode(False):
                weight = target.weight
                if weight.is_inference():  # loaded under the host's inference mode: autograd refuses it
                    weight = target._parameters["weight"] = torch.nn.Parameter(weight.detach().clone(),
                                                                               requires_grad=False)
                _left["handle"] = target.register_forward_hook(_leak_hook)
                _left["was"] = weight.requires_grad
                weight.requires_grad_(True)
                weight.grad = torch.zeros_like(weight)
        elif mode == "undo" and _left:
            _left.pop("handle").remove()
            with torch.inference_mode(False):
                target.weight.grad = None
                target.weight.requires_grad_(_left.pop("was"))
        return (model,)


NODE_CLASS_MAPPINGS = {"SoakStateProbe": SoakStateProbe, "SoakStateLeaver": SoakStateLeaver}
NODE_DISPLAY_NAME_MAPPINGS = {"SoakStateProbe": "Soak State Probe (test only)",
                              "SoakStateLeaver": "Soak State Leaver (test only)"}

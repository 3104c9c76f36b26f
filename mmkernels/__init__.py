"""mmkernels: fused multimodal-fusion kernels for PyTorch.

    out = mmkernels.cross_attention(q, k, v, *, kv_lengths=None, key_padding_mask=None, scale=None,
                                    is_causal=False)
    y   = mmkernels.concat_linear(inputs, weight, bias=None, activation="none")

Both are real PyTorch custom operators (torch.ops.mmkernels.*) with CPU kernels (and CUDA kernels in
a CUDA build), autograd, fake tensors for torch.compile, and plain-PyTorch references in
`mmkernels.reference`. Inside `use_reference_ops()` both (and every layer and model built on them) run
the references; inside `debug_checks()` checks that synchronise host and device run; `cpu_capability()` names the CPU kernel variant in use; `testing.emulated_cuda()` runs
the CUDA kernels on the CPU.

Subpackages, imported on first use: `nn` (layers and fusion modules), `models` (fusion classifiers),
`data` and `examples` (AV-digits), `bench` (python -m mmkernels.bench), `integrations`
(`integrations.transformers`).
"""
from __future__ import annotations

from . import reference, testing
from .ops import concat_linear, cross_attention, cpu_capability, debug_checks, use_reference_ops, using_reference_ops

__version__ = "0.1.0"

# The layer, model and tool subpackages are imported on first use (`mmkernels.nn.ConcatLinear` works
# after a plain `import mmkernels`), keeping `import mmkernels` itself light.
_SUBPACKAGES = ("nn", "models", "data", "bench", "examples", "integrations")


def __getattr__(name):
    if name in _SUBPACKAGES:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'mmkernels' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


__all__ = ["cross_attention", "concat_linear", "use_reference_ops", "using_reference_ops", "debug_checks", "cpu_capability",
           "reference", "testing", *_SUBPACKAGES, "__version__"]

import pytest
import torch

import mmkernels

# Make runs repeatable and keep CI on 2 cores predictable.
torch.manual_seed(0)

# Device parameters of the op tests. "emulated" runs the CUDA kernels on CPU tensors in the host SIMT
# emulation (builds with MMKERNELS_CUDA_EMULATION=ON) as on an H100 (the sm_90a kernels), "emulated_sm80"
# as on an A100 (the sm_80 kernels): the test body sees device "cpu" and runs inside
# mmkernels.testing.emulated_cuda(arch), with the emulation's checkers on.
EMULATED = "emulated"
EMULATED_ARCH = {EMULATED: "sm_90a", "emulated_sm80": "sm_80"}
# The one rule for CUDA tests: they need a GPU and a CUDA build of mmkernels. A test that needs them is
# marked `cuda` (or takes the "cuda" device parameter) and is skipped here otherwise.
HAS_CUDA = torch.cuda.is_available() and bool(mmkernels.ops._C.with_cuda)
# The sm_90a (Hopper) kernels and primitives run on a 9.0 GPU only (arch-specific code; dev::sm90a_runs).
HAS_SM90 = HAS_CUDA and torch.cuda.get_device_capability() == (9, 0)
DEVICES = (
    ["cpu"]
    + (list(EMULATED_ARCH) if mmkernels.testing.emulation_available() else [])
    + (["cuda"] if HAS_CUDA else [])
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a GPU and a CUDA build of mmkernels"))


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    arch = EMULATED_ARCH.get(pyfuncitem.funcargs.get("device"))
    if arch is None:
        yield
        return
    pyfuncitem.funcargs["device"] = "cpu"
    with mmkernels.testing.emulated_cuda(arch):
        yield

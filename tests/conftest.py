import pytest
import torch

import mmkernels

# Make runs repeatable and keep CI on 2 cores predictable.
torch.manual_seed(0)

# Device parameters of the op tests. "emulated" runs the CUDA kernels on CPU tensors in the host SIMT
# emulation (builds with MMKERNELS_CUDA_EMULATION=ON): the test body sees device "cpu" and runs inside
# mmkernels.testing.emulated_cuda(), with the emulation's checkers on.
EMULATED = "emulated"
DEVICES = (
    ["cpu"]
    + ([EMULATED] if mmkernels.testing.emulation_available() else [])
    + (["cuda"] if torch.cuda.is_available() else [])
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.funcargs.get("device") != EMULATED:
        yield
        return
    pyfuncitem.funcargs["device"] = "cpu"
    with mmkernels.testing.emulated_cuda():
        yield

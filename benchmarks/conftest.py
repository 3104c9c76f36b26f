import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        for item in items:
            if "cuda" in item.name:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))

"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead. Modules opt in with ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def available_devices() -> list[str]:
    """``cpu``, plus ``cuda`` where a GPU is present: tests that take ``device`` run on each."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=available_devices())
def device(request) -> torch.device:
    """Each available device in turn (the loss contract: devices follow the inputs)."""
    return torch.device(request.param)

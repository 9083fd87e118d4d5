"""Worker tests run torch on one thread: their tensors are tiny, and on a shared two-core
machine a second thread mostly waits for the first (10-50x slower under load)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # per test: some tests (evaluate_candidate, the slow quality bars) set their own count
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

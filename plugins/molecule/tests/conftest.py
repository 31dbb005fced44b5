import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these small batches gain nothing from more, and on a busy machine the idle
    threads' spin-waiting made the tests many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

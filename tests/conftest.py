import pytest

from fusedrnn import kernels


@pytest.fixture
def two_threads():
    """The kernels on two threads (large enough calls split their time loops), restored after."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(2)
    yield
    kernels.set_num_threads(before)

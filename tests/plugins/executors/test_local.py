"""The local executor's share of the machine's cores."""

from sparsekit_plugins.executors import LocalExecutor
from sparsekit_plugins.executors.local import available_cores


def test_local_workers_times_threads_fit_the_cores():
    executor = LocalExecutor()
    for count in (1, 2, 3, 50):
        workers, threads = executor.workers_for(count), executor.threads_per_call(count)
        assert 1 <= workers <= count and workers * threads <= max(available_cores(), 1)
    assert LocalExecutor(workers=1).threads_per_call(5) == available_cores()

import threading
import time

from conftest import metric_series
from tracker_client.telemetry import SystemSampler, TelemetryThread

SYSTEM_KEYS = {
    "sys/cpu_percent",
    "sys/proc_cpu_percent",
    "sys/memory_percent",
    "sys/memory_used_bytes",
    "sys/proc_rss_bytes",
}
RATE_KEYS = {
    "sys/disk_read_bytes_per_s",
    "sys/disk_write_bytes_per_s",
    "sys/net_sent_bytes_per_s",
    "sys/net_recv_bytes_per_s",
}


def test_sample_keys_on_this_machine():
    sampler = SystemSampler()
    time.sleep(0.05)
    values = sampler.sample()
    assert set(values) >= SYSTEM_KEYS
    # rates appear whenever the OS exposes the counters (they may be absent in containers)
    assert set(values) - SYSTEM_KEYS <= RATE_KEYS | {k for k in values if k.startswith("sys/gpu")}
    assert sampler.gpu_count == 0  # no NVIDIA GPU here: GPU keys are simply absent
    assert not any(k.startswith("sys/gpu") for k in values)
    assert all(isinstance(v, float) and v >= 0 for v in values.values())
    assert values["sys/proc_rss_bytes"] > 1_000_000
    assert 0 <= values["sys/memory_percent"] <= 100
    sampler.close()


def test_thread_uses_sample_index_as_step_and_wall_clock():
    got = []
    done = threading.Event()

    def sink(values, step, wall):
        got.append((step, wall, values))
        if len(got) >= 3:
            done.set()

    before = time.time()
    thread = TelemetryThread(sink, interval=0.05).start()
    assert done.wait(5)
    thread.stop()
    steps = [s for s, _, _ in got]
    assert steps[:3] == [0, 1, 2]
    assert all(before <= w <= time.time() for _, w, _ in got)


def test_run_logs_telemetry_under_sys(closed_port_url):
    from tracker_client import Run
    from tracker_client.journal import Journal, list_journal_dirs

    run = Run(
        project="ws/p", url=closed_port_url, offline=True, telemetry=True, telemetry_interval=0.05
    )
    run.log({"loss": 1.0}, step=100)
    time.sleep(0.3)
    run.finish()
    (directory,) = list_journal_dirs()
    journal = Journal(directory)

    keys = set()
    sys_steps = []
    for record in journal:
        if (series_list := metric_series(record)) is not None:
            for series in series_list:
                keys.add(series["key"])
                if series["key"] == "sys/cpu_percent":
                    sys_steps.extend(series["steps"])
    journal.close(remove_if_empty=False)
    assert keys >= SYSTEM_KEYS and "loss" in keys
    assert sys_steps[:2] == [0, 1]  # telemetry has its own step counter

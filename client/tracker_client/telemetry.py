"""Hardware telemetry sampled in a background thread and logged as `sys/...` series.

Steps are the sample index and wall times the sample time: the UI plots `sys/` against the
wall clock, so telemetry lines up with training metrics without sharing their step counter.
GPUs are read through NVML (nvidia-ml-py) when it is importable and initialises; anything
missing — no NVML, a GPU without power readings, no disk counters in a container — just
leaves those keys out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

logger = logging.getLogger("tracker_client")

Sink = Callable[[dict[str, float], int, float], None]


class _Nvml:
    """NVML handles, or nothing: every failure means "no GPU telemetry", never an error."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self.nvml = pynvml
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver issues
            logger.debug("tracker: GPU telemetry unavailable: %s", exc)

    def sample(self, out: dict[str, float]) -> None:
        nvml = self.nvml
        if nvml is None:
            return
        for i, handle in enumerate(self.handles):
            prefix = f"sys/gpu{i}/"
            util = _nvml_read(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            if util is not None:
                out[prefix + "utilization"] = float(util)
            mem = _nvml_read(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h))
            if mem is not None:
                out[prefix + "memory_used_bytes"] = float(mem.used)
                if mem.total:
                    out[prefix + "memory_percent"] = 100.0 * mem.used / mem.total
            temp = _nvml_read(
                lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            )
            if temp is not None:
                out[prefix + "temperature_c"] = float(temp)
            power = _nvml_read(lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h))
            if power is not None:
                out[prefix + "power_w"] = power / 1000.0  # NVML reports milliwatts

    def close(self) -> None:
        if self.nvml is not None:
            _nvml_read(self.nvml.nvmlShutdown)
            self.nvml = None


def _nvml_read(fn: Callable[[], Any]) -> Any:
    """One NVML query; None when this GPU does not support it (e.g. power on some boards)."""
    try:
        return fn()
    except Exception as exc:
        logger.debug("tracker: NVML query failed: %s", exc)
        return None


class SystemSampler:
    """One call to `sample()` = one telemetry point per key; rates are since the last call."""

    def __init__(self, gpu: bool = True) -> None:
        self._proc = psutil.Process()
        # The first cpu_percent() call only primes psutil's counters (it returns 0.0).
        psutil.cpu_percent(interval=None)
        self._proc.cpu_percent(interval=None)
        self._last_time = time.monotonic()
        self._last_disk = _disk_counters()
        self._last_net = _net_counters()
        self._gpu = _Nvml() if gpu else None

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        dt = max(now - self._last_time, 1e-6)
        self._last_time = now
        out: dict[str, float] = {
            "sys/cpu_percent": float(psutil.cpu_percent(interval=None)),
            "sys/proc_cpu_percent": float(self._proc.cpu_percent(interval=None)),
        }
        vm = psutil.virtual_memory()
        out["sys/memory_percent"] = float(vm.percent)
        out["sys/memory_used_bytes"] = float(vm.used)
        try:
            out["sys/proc_rss_bytes"] = float(self._proc.memory_info().rss)
        except psutil.Error:
            pass
        disk = _disk_counters()
        if disk is not None and self._last_disk is not None:
            out["sys/disk_read_bytes_per_s"] = max(0, disk[0] - self._last_disk[0]) / dt
            out["sys/disk_write_bytes_per_s"] = max(0, disk[1] - self._last_disk[1]) / dt
        self._last_disk = disk
        net = _net_counters()
        if net is not None and self._last_net is not None:
            out["sys/net_sent_bytes_per_s"] = max(0, net[0] - self._last_net[0]) / dt
            out["sys/net_recv_bytes_per_s"] = max(0, net[1] - self._last_net[1]) / dt
        self._last_net = net
        if self._gpu is not None:
            self._gpu.sample(out)
        return out

    @property
    def gpu_count(self) -> int:
        return len(self._gpu.handles) if self._gpu is not None and self._gpu.nvml else 0

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()


def _disk_counters() -> tuple[int, int] | None:
    try:
        io = psutil.disk_io_counters()
    except (OSError, RuntimeError):
        return None
    return (io.read_bytes, io.write_bytes) if io is not None else None


def _net_counters() -> tuple[int, int] | None:
    try:
        io = psutil.net_io_counters()
    except (OSError, RuntimeError):
        return None
    return (io.bytes_sent, io.bytes_recv) if io is not None else None


class TelemetryThread:
    """Calls `sink(values, sample_index, wall_time)` every `interval` seconds until stopped."""

    def __init__(self, sink: Sink, interval: float = 5.0, *, gpu: bool = True) -> None:
        if interval <= 0:
            raise ValueError("telemetry_interval must be > 0")
        self._sink = sink
        self._interval = float(interval)
        self._stop = threading.Event()
        self._sampler = SystemSampler(gpu=gpu)
        self.samples = 0
        self._thread = threading.Thread(target=self._loop, name="tracker-telemetry", daemon=True)

    def start(self) -> TelemetryThread:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                values = self._sampler.sample()
                self._sink(values, self.samples, time.time())
                self.samples += 1
            except Exception as exc:  # telemetry must never disturb training
                logger.debug("tracker: telemetry sample failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sampler.close()

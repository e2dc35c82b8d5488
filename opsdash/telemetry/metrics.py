"""``/metrics``: a prometheus_client collector over the same latest frame the pages show.

Base units throughout (bytes, seconds, joules, watts, hertz, ratios 0–1). Names follow
node_exporter (``node_load1`` → ``opsdash_load1``, ``node_network_receive_bytes_total`` →
``opsdash_network_receive_bytes_total``) and DCGM (``DCGM_FI_DEV_GPU_TEMP`` →
``opsdash_gpu_temperature_celsius``, ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` →
``opsdash_gpu_energy_joules_total``) where one exists. Every host figure carries a ``host``
label, as DCGM's ``Hostname``, so several telemetry agents can share one scrape; the run
ledger's families carry the host that answered the scrape. ``promtool check metrics`` finds
nothing to say (tests/telemetry/test_metrics.py checks its rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsdash.telemetry.frames import Frame


class TelemetryCollector(Collector):
    """Reads the frames and run totals at scrape time (both injected, so tests can pass
    fixed ones; the run totals are the runs app's, ``opsdash.runs.ledger.run_totals``).
    ``host`` labels the run ledger's families (default: this host's ``OPSDASH_TELEMETRY_HOST``).
    """

    def __init__(
        self,
        frames: Callable[[], list[Frame]],
        run_totals: Callable[[], list[dict[str, Any]]],
        *,
        host: str | None = None,
    ) -> None:
        self._frames = frames
        self._run_totals = run_totals
        self._host = host or str(settings.TELEMETRY_HOST)

    def collect(self) -> Iterator[Metric]:
        frames = self._frames()
        yield from _host_metrics(frames)
        yield from _gpu_metrics(frames)
        yield from _runner_metrics(frames)
        yield from _run_metrics(self._run_totals(), host=self._host)


def render(collector: TelemetryCollector, *extra: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    for each in (collector, *extra):
        registry.register(each)
    return generate_latest(registry)


class _Families:
    """Builds families by name so each is declared once, in the order first used."""

    def __init__(self) -> None:
        self.families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = GaugeMetricFamily(name, doc, labels=labels)
        assert isinstance(family, GaugeMetricFamily)
        return family

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = CounterMetricFamily(name, doc, labels=labels)
        assert isinstance(family, CounterMetricFamily)
        return family

    def add(self, name: str, doc: str, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            self.gauge(name, doc, list(labels)).add_metric(list(labels.values()), value)

    def add_counter(self, name: str, doc: str, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            self.counter(name, doc, list(labels)).add_metric(list(labels.values()), value)


def _host_metrics(frames: list[Frame]) -> Iterator[Metric]:
    f = _Families()
    for frame in frames:
        h = {"host": frame["host"]}
        cpu, memory, disk, net = frame["cpu"], frame["memory"], frame["disk"], frame["net"]
        f.add(
            "opsdash_telemetry_frame_timestamp_seconds",
            "When the frame was sampled.",
            h,
            frame["t"] / 1000,
        )
        f.add("opsdash_cpu_usage_ratio", "CPU busy, all cores, 0-1.", h, cpu["total"] / 100)
        for core, percent in enumerate(cpu["percent"]):
            f.add(
                "opsdash_cpu_core_usage_ratio",
                "CPU busy per core, 0-1.",
                {**h, "core": str(core)},
                percent / 100,
            )
        # Not opsdash_cpu_count: a _count suffix belongs to histograms and summaries.
        f.add("opsdash_cpu_cores", "Logical CPUs (hardware threads).", h, cpu["count"])
        if cpu["freq_mhz"] is not None:
            f.add(
                "opsdash_cpu_frequency_hertz",
                "Current CPU clock (mean of cores).",
                h,
                cpu["freq_mhz"] * 1e6,
            )
        for minutes, value in zip((1, 5, 15), cpu["load"], strict=True):
            f.add(f"opsdash_load{minutes}", f"{minutes}-minute load average.", h, value)
        f.add("opsdash_memory_total_bytes", "Physical memory.", h, memory["total_bytes"])
        f.add(
            "opsdash_memory_used_bytes",
            "Memory in use (total - available).",
            h,
            memory["used_bytes"],
        )
        f.add(
            "opsdash_memory_available_bytes",
            "Memory available without swapping.",
            h,
            memory["available_bytes"],
        )
        f.add("opsdash_memory_cached_bytes", "Page cache and buffers.", h, memory["cached_bytes"])
        f.add("opsdash_swap_total_bytes", "Swap space.", h, memory["swap_total_bytes"])
        f.add("opsdash_swap_used_bytes", "Swap in use.", h, memory["swap_used_bytes"])
        f.add_counter(
            "opsdash_disk_read_bytes", "Bytes read from whole disks.", h, disk["read_bytes_total"]
        )
        f.add_counter(
            "opsdash_disk_written_bytes",
            "Bytes written to whole disks.",
            h,
            disk["write_bytes_total"],
        )
        f.add(
            "opsdash_disk_read_bytes_per_second",
            "Disk read rate over the last tick.",
            h,
            disk["read_bytes_s"],
        )
        f.add(
            "opsdash_disk_written_bytes_per_second",
            "Disk write rate over the last tick.",
            h,
            disk["write_bytes_s"],
        )
        models = {**h, "mountpoint": "models"}
        f.add(
            "opsdash_filesystem_avail_bytes",
            "Free space where models are installed.",
            models,
            disk["models_free_bytes"],
        )
        f.add(
            "opsdash_filesystem_size_bytes",
            "Size of the models filesystem.",
            models,
            disk["models_total_bytes"],
        )
        f.add_counter(
            "opsdash_network_receive_bytes",
            "Bytes received (physical NICs).",
            h,
            net["rx_bytes_total"],
        )
        f.add_counter(
            "opsdash_network_transmit_bytes",
            "Bytes sent (physical NICs).",
            h,
            net["tx_bytes_total"],
        )
        f.add(
            "opsdash_network_receive_bytes_per_second",
            "Receive rate over the last tick.",
            h,
            net["rx_bytes_s"],
        )
        f.add(
            "opsdash_network_transmit_bytes_per_second",
            "Send rate over the last tick.",
            h,
            net["tx_bytes_s"],
        )
        for alert in frame["alerts"]:
            f.add(
                "opsdash_alert_active",
                "1 while a threshold is exceeded.",
                {**h, "kind": alert["kind"], "subject": alert["subject"]},
                1,
            )
        server = frame["server"]
        if server is not None:
            f.add(
                "opsdash_server_resident_memory_bytes",
                "RSS of the OpsDash process.",
                h,
                server["rss_bytes"],
            )
            f.add(
                "opsdash_server_cpu_usage_ratio",
                "CPU of the OpsDash process (1 = a core).",
                h,
                server["cpu_percent"] / 100,
            )
    yield from f.families.values()


def _gpu_metrics(frames: list[Frame]) -> Iterator[Metric]:
    f = _Families()
    for frame in frames:
        h = {"host": frame["host"]}
        f.add(
            "opsdash_gpu_available",
            "1 when NVML reports GPUs, else 0 (see the state).",
            h,
            1 if frame["gpu_state"] == "ok" else 0,
        )
        f.add(
            "opsdash_gpu_state_info",
            "NVML state: ok, no_library, no_driver, no_devices, error: ...",
            {**h, "state": frame["gpu_state"]},
            1,
        )
        for g in frame["gpus"]:
            labels = {**h, "gpu": str(g["index"])}
            f.add("opsdash_gpu_info", "GPU model name.", {**labels, "name": g["name"]}, 1)
            for name, doc, value in (
                (
                    "opsdash_gpu_utilization_ratio",
                    "GPU busy (DCGM_FI_DEV_GPU_UTIL), 0-1.",
                    _ratio(g["util"]),
                ),
                (
                    "opsdash_gpu_memory_utilization_ratio",
                    "Memory controller busy, 0-1.",
                    _ratio(g["mem_util"]),
                ),
                (
                    "opsdash_gpu_memory_used_bytes",
                    "Framebuffer used (DCGM_FI_DEV_FB_USED).",
                    g["mem_used"],
                ),
                ("opsdash_gpu_memory_total_bytes", "Framebuffer size.", g["mem_total"]),
                (
                    "opsdash_gpu_temperature_celsius",
                    "GPU temperature (DCGM_FI_DEV_GPU_TEMP).",
                    g["temp"],
                ),
                ("opsdash_gpu_power_watts", "Power draw (DCGM_FI_DEV_POWER_USAGE).", g["power"]),
                ("opsdash_gpu_power_limit_watts", "Enforced power limit.", g["power_limit"]),
                (
                    "opsdash_gpu_sm_clock_hertz",
                    "SM clock (DCGM_FI_DEV_SM_CLOCK).",
                    _mhz(g["sm_clock"]),
                ),
                (
                    "opsdash_gpu_memory_clock_hertz",
                    "Memory clock (DCGM_FI_DEV_MEM_CLOCK).",
                    _mhz(g["mem_clock"]),
                ),
                ("opsdash_gpu_fan_speed_ratio", "Fan speed, 0-1 of its maximum.", _ratio(g["fan"])),
                ("opsdash_gpu_pcie_receive_bytes_per_second", "PCIe receive rate.", g["pcie_rx"]),
                ("opsdash_gpu_pcie_transmit_bytes_per_second", "PCIe send rate.", g["pcie_tx"]),
            ):
                f.add(name, doc, labels, value)
            f.add_counter(
                "opsdash_gpu_energy_joules",
                "Energy since the driver loaded (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION).",
                labels,
                g["energy"],
            )
    yield from f.families.values()


def _runner_metrics(frames: list[Frame]) -> Iterator[Metric]:
    f = _Families()
    for frame in frames:
        h = {"host": frame["host"]}
        f.add(
            "opsdash_models_loaded", "Runner processes (loaded models).", h, len(frame["runners"])
        )
        for r in frame["runners"]:
            # The slug the runs app gave with the runner state: the run counters' label too.
            labels = {**h, "model": r.get("slug") or str(r["model"])}
            f.add(
                "opsdash_runner_resident_memory_bytes",
                "RSS of the model's runner process.",
                labels,
                r["rss_bytes"],
            )
            f.add(
                "opsdash_runner_cpu_usage_ratio",
                "CPU of the runner (1 = one core busy).",
                labels,
                r["cpu_percent"] / 100,
            )
            f.add(
                "opsdash_runner_gpu_memory_bytes",
                "GPU memory the runner holds.",
                labels,
                r["gpu_mem_bytes"],
            )
            f.add("opsdash_runner_threads", "Threads of the runner process.", labels, r["threads"])
            f.add(
                "opsdash_runner_queue_length", "Requests running plus waiting.", labels, r["queue"]
            )
    yield from f.families.values()


def _run_metrics(totals: list[dict[str, Any]], *, host: str) -> Iterator[Metric]:
    # The ledger is shared by every node, so these carry the host that answered the scrape.
    runs = CounterMetricFamily(
        "opsdash_runs", "Runs in the ledger.", labels=["host", "model", "status"]
    )
    tokens = CounterMetricFamily(
        "opsdash_run_tokens", "Tokens of the runs.", labels=["host", "model", "status", "kind"]
    )
    for row in totals:
        model, status = row["model__slug"], row["status"]
        runs.add_metric([host, model, status], row["runs"])
        tokens.add_metric([host, model, status, "prompt"], row["prompt_tokens"] or 0)
        tokens.add_metric([host, model, status, "completion"], row["completion_tokens"] or 0)
    yield runs
    yield tokens


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


def _mhz(value: float | None) -> float | None:
    return None if value is None else value * 1e6

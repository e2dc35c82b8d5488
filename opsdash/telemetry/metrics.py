"""``/metrics``: a prometheus_client collector over the same latest frame the pages show.

Base units throughout (bytes, seconds, joules, watts, hertz, ratios 0–1). Names follow
node_exporter (``node_load1`` → ``opsdash_load1``, ``node_network_receive_bytes_total`` →
``opsdash_network_receive_bytes_total``) and DCGM (``DCGM_FI_DEV_GPU_TEMP`` →
``opsdash_gpu_temperature_celsius``, ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` →
``opsdash_gpu_energy_joules_total``) where one exists. Every host figure carries a ``host``
label, as DCGM's ``Hostname``, so several nodes share one scrape; the run ledger's families
carry the node that served the runs (``Run.node``), so a hub's one scrape reports each node's.
``promtool check metrics`` finds nothing to say (tests/telemetry/test_metrics.py checks its
rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsdash.telemetry.frames import Frame
from opsdash.telemetry.probes.gpu_health import THROTTLE_REASONS


class TelemetryCollector(Collector):
    """Reads the frames and run totals at scrape time (both injected, so tests can pass
    fixed ones; the run totals are the runs app's, ``opsdash.runs.ledger.run_totals``).
    A run's ``host`` label is its node (``Run.node``); ``host`` (default: this host's
    ``OPSDASH_TELEMETRY_HOST``) labels the runs from before nodes were recorded.
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
        yield from _run_metrics(self._run_totals(), default_host=self._host)


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
            _gpu_health_metrics(f, labels, g)
    yield from f.families.values()


def _gpu_health_metrics(f: _Families, labels: dict[str, str], g: Any) -> None:
    """ECC, retirement, throttling, violations, XID, margin, processes (probes/gpu_health.py
    says the frame's shape). ``.get``: a frame from an older agent has none of them."""
    ecc = g.get("ecc") or []
    for value, (kind, counter) in zip(ecc, ECC_LABELS, strict=False):
        f.add_counter(
            "opsdash_gpu_ecc_errors",
            "ECC errors (DCGM_FI_DEV_ECC_SBE/DBE_VOL/AGG_TOTAL); volatile: since the driver "
            "loaded, aggregate: the board's lifetime.",
            {**labels, "type": kind, "counter": counter},
            value,
        )
    retired = g.get("retired") or [None, None, None]
    for value, cause in zip(retired[:2], ("single_bit", "double_bit"), strict=True):
        f.add(
            "opsdash_gpu_retired_pages",
            "Memory pages retired (DCGM_FI_DEV_RETIRED_SBE/DBE).",
            {**labels, "cause": cause},
            value,
        )
    f.add(
        "opsdash_gpu_retired_pages_pending",
        "1 while a page retirement waits for a GPU reset (DCGM_FI_DEV_RETIRED_PENDING).",
        labels,
        retired[2],
    )
    remap = g.get("remap") or [None, None, None, None]
    for value, kind in zip(remap[:2], ("correctable", "uncorrectable"), strict=True):
        f.add(
            "opsdash_gpu_remapped_rows",
            "Memory rows remapped (DCGM_FI_DEV_CORRECTABLE/UNCORRECTABLE_REMAPPED_ROWS).",
            {**labels, "type": kind},
            value,
        )
    f.add(
        "opsdash_gpu_row_remap_pending",
        "1 while a row remap waits for a GPU reset (DCGM_FI_DEV_ROW_REMAP_PENDING).",
        labels,
        remap[2],
    )
    f.add(
        "opsdash_gpu_row_remap_failure",
        "1 when a row remap failed (DCGM_FI_DEV_ROW_REMAP_FAILURE).",
        labels,
        remap[3],
    )
    throttle = g.get("throttle")
    if throttle is not None:
        for reason in THROTTLE_REASON_NAMES:
            f.add(
                "opsdash_gpu_throttle_reasons",
                "1 while this clock-event (throttle) reason holds the clocks down "
                "(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS, one series per bit).",
                {**labels, "reason": reason},
                1 if reason in throttle else 0,
            )
    viol = g.get("viol") or []
    for value, policy in zip(viol, ("power", "thermal"), strict=False):
        f.add_counter(
            "opsdash_gpu_violation_seconds",
            "Time the clocks were held down by a policy since the driver loaded "
            "(DCGM_FI_DEV_POWER/THERMAL_VIOLATION).",
            {**labels, "policy": policy},
            value,
        )
    f.add_counter(
        "opsdash_gpu_xid_errors",
        "Critical XID events the node's sampler has seen since it started.",
        labels,
        g.get("xid_total"),
    )
    xid = g.get("xid")
    if xid:
        f.add(
            "opsdash_gpu_last_xid",
            "The last critical XID number in the last 10 minutes (DCGM_FI_DEV_XID_ERRORS).",
            labels,
            xid[-1][0],
        )
    f.add(
        "opsdash_gpu_thermal_margin_celsius",
        "Degrees left before the GPU slows itself down (NVML margin, or slowdown - temp).",
        labels,
        g.get("margin"),
    )
    f.add(
        "opsdash_gpu_slowdown_temperature_celsius",
        "Temperature at which the GPU slows itself down (DCGM_FI_DEV_SLOWDOWN_TEMP).",
        labels,
        g.get("slowdown"),
    )
    for pid, used, sm, mem in g.get("procs") or []:
        process = {**labels, "pid": str(pid)}
        f.add(
            "opsdash_gpu_process_memory_bytes",
            "GPU memory a process holds on this GPU.",
            process,
            used,
        )
        f.add(
            "opsdash_gpu_process_sm_utilization_ratio",
            "SM busy for this process over the last sampling period, 0-1.",
            process,
            _ratio(sm),
        )
        f.add(
            "opsdash_gpu_process_memory_utilization_ratio",
            "Memory controller busy for this process, 0-1.",
            process,
            _ratio(mem),
        )


ECC_LABELS = (
    ("corrected", "volatile"),
    ("uncorrected", "volatile"),
    ("corrected", "aggregate"),
    ("uncorrected", "aggregate"),
)
THROTTLE_REASON_NAMES = [name for _, name in THROTTLE_REASONS]


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


def _run_metrics(totals: list[dict[str, Any]], *, default_host: str) -> Iterator[Metric]:
    # The ledger is shared by every node: each run counts under the node that served it. Runs
    # from before nodes were recorded ran on the host that kept the ledger then.
    runs = CounterMetricFamily(
        "opsdash_runs", "Runs in the ledger.", labels=["host", "model", "status"]
    )
    tokens = CounterMetricFamily(
        "opsdash_run_tokens", "Tokens of the runs.", labels=["host", "model", "status", "kind"]
    )
    # Summed per label set: unrecorded runs and that host's own recorded ones share one series.
    sums: dict[tuple[str, str, str], list[int]] = {}
    for row in totals:
        key = (row.get("node") or default_host, row["model__slug"], row["status"])
        figures = sums.setdefault(key, [0, 0, 0])
        figures[0] += row["runs"]
        figures[1] += row["prompt_tokens"] or 0
        figures[2] += row["completion_tokens"] or 0
    for (host, model, status), (count, prompt, completion) in sums.items():
        runs.add_metric([host, model, status], count)
        tokens.add_metric([host, model, status, "prompt"], prompt)
        tokens.add_metric([host, model, status, "completion"], completion)
    yield runs
    yield tokens


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


def _mhz(value: float | None) -> float | None:
    return None if value is None else value * 1e6

"""Host figures: rates from the kernel's counters, whole disks only, the process table."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import psutil

from opsdash.telemetry.probes.host import HostProbe, ProcessTable
from tests.telemetry.test_frames import fake_sys


class Counting:
    """psutil with disk and network counters the test moves by hand."""

    def __init__(self) -> None:
        self.disk = {"sda": [0, 0], "sda1": [0, 0], "loop0": [0, 0], "dm-0": [0, 0]}
        self.net = {"enp1s0f0": [0, 0], "lo": [0, 0], "veth12": [0, 0]}

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(psutil, name)

    def disk_io_counters(self, perdisk=False, nowrap=True):  # type: ignore[no-untyped-def]
        return {k: SimpleNamespace(read_bytes=r, write_bytes=w) for k, (r, w) in self.disk.items()}

    def net_io_counters(self, pernic=False, nowrap=True):  # type: ignore[no-untyped-def]
        return {k: SimpleNamespace(bytes_recv=r, bytes_sent=s) for k, (r, s) in self.net.items()}


def test_rates_are_bytes_per_second_and_count_whole_disks_and_physical_nics_once(tmp_path):
    ps = Counting()
    probe = HostProbe(models_dir=tmp_path, ps=ps, sys_root=fake_sys(tmp_path / "sys", 0, 0))
    (tmp_path / "sys" / "block" / "sda" / "device").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "net" / "enp1s0f0" / "device").mkdir(parents=True)
    before_first = time.monotonic()
    first = probe.read(slow=True)
    after_first = time.monotonic()
    assert first.disk["read_bytes_s"] == 0, "no rate before a second reading"

    for name in ps.disk:  # the same bytes show up on the partition and the LVM volume too
        ps.disk[name] = [50_000_000, 10_000_000]
    for name in ps.net:
        ps.net[name] = [2_000_000, 1_000_000]
    time.sleep(0.5)
    before_second = time.monotonic()
    second = probe.read(slow=False)
    # The probe measured the time between its readings somewhere within these bounds, however
    # long a loaded machine took over them.
    shortest, longest = before_second - after_first, time.monotonic() - before_first

    read_rate = second.disk["read_bytes_s"]
    assert 50_000_000 / longest <= read_rate <= 50_000_000 / shortest, "one disk, per second"
    assert second.disk["devices"].keys() == {"sda"}
    assert second.disk["read_bytes_total"] == 50_000_000
    assert second.net["interfaces"].keys() == {"enp1s0f0"}, "not lo, not the veth"
    assert 2_000_000 / longest <= second.net["rx_bytes_s"] <= 2_000_000 / shortest
    assert second.disk["models_free_bytes"] > 0 and second.disk["models_total_bytes"] > 0


def test_without_physical_nics_every_interface_but_loopback_counts(tmp_path):
    ps = Counting()
    probe = HostProbe(models_dir=tmp_path, ps=ps, sys_root=fake_sys(tmp_path / "sys", 0, 0))
    probe.read(slow=False)
    ps.net = {"eth0": [1000, 0], "lo": [10**9, 10**9]}  # a container: eth0 is a veth

    reading = probe.read(slow=False)

    assert reading.net["interfaces"].keys() == {"eth0"}
    assert reading.net["rx_bytes_total"] == 1000


def test_cpu_and_memory_figures_are_those_of_this_machine(tmp_path):
    probe = HostProbe(models_dir=tmp_path)
    time.sleep(0.2)
    reading = probe.read(slow=True)

    assert len(reading.cpu["percent"]) == psutil.cpu_count() == reading.cpu["count"]
    assert 0 <= reading.cpu["total"] <= 100
    assert reading.memory["total_bytes"] == psutil.virtual_memory().total
    assert 0 < reading.memory["used_bytes"] < reading.memory["total_bytes"]


def test_the_process_table_measures_live_processes_and_forgets_dead_ones():
    table = ProcessTable()
    table.read([os.getpid()])
    sum(i * i for i in range(2_000_000))  # some CPU to measure

    figures = table.read([os.getpid(), 999_999_999])

    mine = figures[os.getpid()]
    assert mine["rss_bytes"] > 10 * 1024 * 1024 and mine["threads"] >= 1
    assert mine["cpu_percent"] > 0
    assert 999_999_999 not in figures, "a pid that does not exist is left out, not an error"

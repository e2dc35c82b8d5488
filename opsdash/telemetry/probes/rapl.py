"""CPU package energy through Linux powercap (RAPL): ``intel-rapl:N/energy_uj``.

Each top-level zone is one package; sub-zones (``intel-rapl:N:M``, cores and uncore) are parts
of it and are not counted again. The counters restart at ``max_energy_range_uj`` (the energy
recorder adds the range back). Since Linux 5.10 (CVE-2020-8694) the files are root-only, so most
hosts have none readable: that is a normal state, not an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
RESCAN_SECONDS = 60.0


@dataclass(frozen=True)
class RaplZone:
    device: str  # "cpu:intel-rapl:0"
    path: Path
    wrap_uj: int | None


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


class RaplProbe:
    """``read()``: device name → microjoules now, for every readable package zone."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self._root = root
        self._zones: list[RaplZone] | None = None
        self._scanned_at = 0.0

    def zones(self) -> list[RaplZone]:
        """The readable package zones (rescanned every minute: permissions can change)."""
        if self._zones is None or time.monotonic() - self._scanned_at >= RESCAN_SECONDS:
            self._zones = _scan(self._root)
            self._scanned_at = time.monotonic()
        return self._zones

    def read(self) -> dict[str, int]:
        out = {}
        for zone in self.zones():
            try:
                out[zone.device] = _read_int(zone.path / "energy_uj")
            except (OSError, ValueError):
                continue
        return out

    def wraps(self) -> dict[str, int | None]:
        return {zone.device: zone.wrap_uj for zone in self.zones()}


def _scan(root: Path) -> list[RaplZone]:
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue
        try:
            _read_int(zone / "energy_uj")
        except (OSError, ValueError):
            continue  # present but unreadable (root-only)
        try:
            wrap: int | None = _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):
            wrap = None
        found.append(RaplZone(f"cpu:{zone.name}", zone, wrap))
    return found

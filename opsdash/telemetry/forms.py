"""The thresholds form: validation only; ``services.update_thresholds`` stores them."""

from __future__ import annotations

from django import forms

from opsdash.telemetry import alerts
from opsdash.telemetry.models import AlertKind

GIB = alerts.GIB


class ThresholdsForm(forms.Form):
    gpu_temperature = forms.FloatField(
        label="GPU temperature above (°C), without a known margin",
        min_value=20,
        max_value=120,
    )
    gpu_temperature_on = forms.BooleanField(required=False, label="on")
    gpu_memory = forms.FloatField(label="GPU memory used above (%)", min_value=1, max_value=100)
    gpu_memory_on = forms.BooleanField(required=False, label="on")
    ram = forms.FloatField(label="RAM used above (%)", min_value=1, max_value=100)
    ram_on = forms.BooleanField(required=False, label="on")
    disk_free_gib = forms.FloatField(label="Models disk free below (GiB)", min_value=0)
    disk_free_on = forms.BooleanField(required=False, label="on")
    # The GPU health rules came later: a form posted without them leaves them as they are.
    gpu_thermal_margin = forms.FloatField(
        label="GPU thermal margin below (°C)", min_value=0, max_value=50, required=False
    )
    gpu_thermal_margin_on = forms.BooleanField(required=False, label="on")
    gpu_throttle = forms.FloatField(
        label="GPU thermal slowdown for at least (s)", min_value=0, max_value=3600, required=False
    )
    gpu_throttle_on = forms.BooleanField(required=False, label="on")
    gpu_power_cap = forms.FloatField(
        label="GPU at its power cap for at least (s)", min_value=0, max_value=86400, required=False
    )
    gpu_power_cap_on = forms.BooleanField(required=False, label="on")
    gpu_xid = forms.FloatField(
        label="GPU XID errors in 10 minutes, at least", min_value=1, max_value=1000, required=False
    )
    gpu_xid_on = forms.BooleanField(required=False, label="on")
    gpu_ecc = forms.FloatField(
        label="GPU uncorrected ECC errors, at least", min_value=1, max_value=10**6, required=False
    )
    gpu_ecc_on = forms.BooleanField(required=False, label="on")
    gpu_retirement = forms.FloatField(
        label="GPU page retirements or row remaps pending, at least",
        min_value=1,
        max_value=3,
        required=False,
    )
    gpu_retirement_on = forms.BooleanField(required=False, label="on")

    @classmethod
    def for_rules(cls, rules: list[alerts.Rule]) -> ThresholdsForm:
        by_kind = {r.kind: r for r in rules}
        initial: dict[str, object] = {}
        for kind, (field, on) in FIELDS.items():
            rule = by_kind[kind]
            initial[field] = (
                round(rule.threshold / GIB, 1) if kind == AlertKind.DISK_FREE else rule.threshold
            )
            initial[on] = rule.enabled
        return cls(initial=initial)

    def values(self) -> dict[str, tuple[float, bool]]:
        """kind → (threshold in the rule's unit, enabled), from valid data."""
        data = self.cleaned_data
        out = {}
        for kind, (field, on) in FIELDS.items():
            if data[field] is None:  # an optional rule not posted: unchanged
                continue
            value = float(data[field]) * (GIB if kind == AlertKind.DISK_FREE else 1)
            out[kind] = (value, bool(data[on]))
        return out

    def rows(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[field], self[on]) for field, on in FIELDS.values()]


FIELDS = {
    AlertKind.GPU_TEMPERATURE.value: ("gpu_temperature", "gpu_temperature_on"),
    AlertKind.GPU_MEMORY.value: ("gpu_memory", "gpu_memory_on"),
    AlertKind.RAM.value: ("ram", "ram_on"),
    AlertKind.DISK_FREE.value: ("disk_free_gib", "disk_free_on"),
    **{
        kind.value: (kind.value, f"{kind.value}_on")
        for kind in (
            AlertKind.GPU_THERMAL_MARGIN,
            AlertKind.GPU_THROTTLE,
            AlertKind.GPU_POWER_CAP,
            AlertKind.GPU_XID,
            AlertKind.GPU_ECC,
            AlertKind.GPU_RETIREMENT,
        )
    },
}

from __future__ import annotations

from django.conf import settings
from django.db import models


class MinuteFigures(models.Model):
    """One host's figures over one minute: ``{series: [min, avg, max]}`` for every charted
    series (``frames.series_of``), plus ``n``, the number of 1 s samples behind them.

    One row per host per minute keeps 30 days at 43,200 rows a host.
    """

    host = models.CharField(max_length=255)
    minute = models.DateTimeField(help_text="start of the minute, UTC")
    samples = models.PositiveSmallIntegerField()
    figures = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "minute"], name="telemetry_minute_once")
        ]
        indexes = [models.Index(fields=["minute"])]
        ordering = ["minute"]

    def __str__(self) -> str:
        return f"{self.host} {self.minute:%Y-%m-%d %H:%M}"


class AlertKind(models.TextChoices):
    GPU_TEMPERATURE = "gpu_temperature", "GPU temperature"
    GPU_MEMORY = "gpu_memory", "GPU memory"
    RAM = "ram", "RAM"
    DISK_FREE = "disk_free", "Models disk free space"
    GPU_THERMAL_MARGIN = "gpu_thermal_margin", "GPU thermal margin"
    GPU_THROTTLE = "gpu_throttle", "GPU thermal slowdown"
    GPU_POWER_CAP = "gpu_power_cap", "GPU at its power cap"
    GPU_XID = "gpu_xid", "GPU XID errors"
    GPU_ECC = "gpu_ecc", "GPU uncorrected ECC errors"
    GPU_RETIREMENT = "gpu_retirement", "GPU memory retirement pending"


class AlertRule(models.Model):
    """A threshold admins set; one row per kind (created by a migration).

    GPU temperature in °C, GPU memory and RAM in percent used (raised above the threshold),
    disk free in bytes of the models folder's disk and the GPU thermal margin in °C (raised
    below it), thermal slowdown and power cap in seconds active, XID, uncorrected ECC and
    pending retirements in counts (raised when reached). ``alerts.py`` says each rule.
    """

    kind = models.CharField(max_length=20, choices=AlertKind.choices, unique=True)
    threshold = models.FloatField()
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold}"


class AlertEpisode(models.Model):
    """One stretch of time a threshold was exceeded on one subject (a GPU, the host's RAM, the
    models disk); ``ended_at`` is empty while it lasts."""

    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    host = models.CharField(max_length=255)
    subject = models.CharField(max_length=120)
    threshold = models.FloatField()
    peak = models.FloatField(help_text="the worst value seen during the episode")
    message = models.CharField(max_length=300)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} from {self.started_at:%Y-%m-%d %H:%M:%S}"

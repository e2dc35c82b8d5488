"""The price book, per-workflow costing history, frozen per-run costs and daily rollups.

Money is integer nano-USD (``*_nusd``), unit prices nano-USD per million tokens
(``*_nusd_per_mtok``) or per kWh, energy integer millijoules: see ``money.py``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from opsdash.catalog.models import LocalModel
from opsdash.runs.models import Run, Workflow


class PriceSource(models.TextChoices):
    PACKAGE = "genai-prices", "genai-prices"
    ADMIN = "admin", "admin"


class Price(models.Model):
    """What one paid model charges, from ``effective_from`` until ``effective_to`` (exclusive).

    Rows are never edited: a change closes the open row (sets ``effective_to``, once) and opens a
    new one. Rows of one source never overlap for the same model; an ``admin`` row in effect wins
    over a ``genai-prices`` row in effect at the same moment.
    """

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=128)
    currency = models.CharField(max_length=3, default="USD")
    input_nusd_per_mtok = models.BigIntegerField()
    output_nusd_per_mtok = models.BigIntegerField()
    cached_input_nusd_per_mtok = models.BigIntegerField(null=True, blank=True)
    # What the provider's batch API charges (OpenAI's and Anthropic's are half the interactive
    # rate). Both or neither: without them a batch run is priced at the interactive rate.
    batch_input_nusd_per_mtok = models.BigIntegerField(null=True, blank=True)
    batch_output_nusd_per_mtok = models.BigIntegerField(null=True, blank=True)
    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=PriceSource.choices)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["provider", "model", "source", "-effective_from"]
        indexes = [models.Index(fields=["provider", "model", "source", "effective_from"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_nusd_per_mtok__gte=0)
                & models.Q(output_nusd_per_mtok__gte=0)
                & (
                    models.Q(cached_input_nusd_per_mtok__isnull=True)
                    | models.Q(cached_input_nusd_per_mtok__gte=0)
                ),
                name="savings_price_not_negative",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(batch_input_nusd_per_mtok__isnull=True)
                    & models.Q(batch_output_nusd_per_mtok__isnull=True)
                )
                | (
                    models.Q(batch_input_nusd_per_mtok__gte=0)
                    & models.Q(batch_output_nusd_per_mtok__gte=0)
                ),
                name="savings_price_batch_both_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(effective_to__isnull=True)
                | models.Q(effective_to__gt=models.F("effective_from")),
                name="savings_price_range_forward",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} ({self.source}, from {self.effective_from:%Y-%m-%d})"

    @property
    def has_batch_price(self) -> bool:
        return self.batch_input_nusd_per_mtok is not None and (
            self.batch_output_nusd_per_mtok is not None
        )


class CostingChange(models.Model):
    """From ``effective_from`` on, a workflow's runs are compared against this paid model and
    their energy is charged at this electricity price (null: ``OPSDASH_ELECTRICITY_USD_PER_KWH``).

    The runs app keeps the *current* baseline on ``Workflow``; this history is what lets a change
    apply "from that moment on": a run is costed with the row in effect when it started.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    baseline_provider = models.CharField(max_length=64, blank=True)
    baseline_model = models.CharField(max_length=128, blank=True)
    electricity_nusd_per_kwh = models.BigIntegerField(null=True, blank=True)
    effective_from = models.DateTimeField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["workflow", "-effective_from", "-id"]
        indexes = [models.Index(fields=["workflow", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.workflow_id}: {self.baseline_provider}/{self.baseline_model}"


class EnergySource(models.TextChoices):
    MEASURED = "measured"
    ESTIMATED = "estimated"


class TokenMethod(models.TextChoices):
    LOCAL_TOKENIZER = "local_tokenizer", "the local model's tokenizer"


class RunCost(models.Model):
    """A run's costing, frozen when it was finalized (only ``recompute_savings`` rewrites it).

    ``avoided`` is what the baseline API would have charged for the run's tokens; ``local`` the
    energy it used at the electricity price; ``net = avoided − local``. An unpriced run (no
    baseline, or no price for it when the run started) has ``priced=False``, avoided and net 0,
    and still its real local cost. A run whose costing raised has ``error`` (why), is unpriced
    and has no local cost: it is counted among the unpriced runs and ``recompute_savings`` can
    cost it again. ``batch_rate``: a batch run (``Run.source == "batch"``) priced at the row's
    batch prices; a batch run whose row has none is priced at the interactive rate (False).
    """

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="cost")
    priced = models.BooleanField()
    price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.PROTECT, related_name="run_costs"
    )
    baseline_provider = models.CharField(max_length=64, blank=True)
    baseline_model = models.CharField(max_length=128, blank=True)
    electricity_nusd_per_kwh = models.BigIntegerField()
    avoided_nusd = models.BigIntegerField()
    local_nusd = models.BigIntegerField()
    net_nusd = models.BigIntegerField()
    energy_mj = models.BigIntegerField()
    energy_source = models.CharField(max_length=10, choices=EnergySource.choices)
    energy_basis = models.CharField(max_length=200, blank=True, help_text="how it was found")
    energy_devices = models.JSONField(default=list, blank=True)
    token_method = models.CharField(
        max_length=20, choices=TokenMethod.choices, default=TokenMethod.LOCAL_TOKENIZER
    )
    priced_at = models.DateTimeField()
    revision = models.PositiveIntegerField(default=1, help_text="1 + times recomputed")
    error = models.CharField(max_length=300, blank=True, help_text="why costing failed")
    # A database default too: the savings benchmark writes costs with plain SQL.
    batch_rate = models.BooleanField(
        default=False, db_default=False, help_text="priced at the baseline's batch prices"
    )

    def __str__(self) -> str:
        return f"cost of run {self.run_id}"


class RollupFigures(models.Model):
    """The sums a rollup row keeps (money nano-USD, energy millijoules)."""

    day = models.DateField()
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    # The node that ran them (``Run.node``; blank for runs from before nodes were recorded), so
    # the savings of a fleet split by node from the same rows.
    node = models.CharField(max_length=63, blank=True, default="")
    runs = models.BigIntegerField(default=0)
    ok_runs = models.BigIntegerField(default=0)
    unpriced_runs = models.BigIntegerField(default=0)
    measured_runs = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    avoided_nusd = models.BigIntegerField(default=0)
    local_nusd = models.BigIntegerField(default=0)
    net_nusd = models.BigIntegerField(default=0)
    energy_mj = models.BigIntegerField(default=0)
    # Of the figures above, the batch runs' share (``Run.source == "batch"``), so the savings
    # of bulk jobs show apart from interactive traffic.
    batch_runs = models.BigIntegerField(default=0)
    batch_prompt_tokens = models.BigIntegerField(default=0)
    batch_completion_tokens = models.BigIntegerField(default=0)
    batch_avoided_nusd = models.BigIntegerField(default=0)
    batch_net_nusd = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


ROLLUP_FIGURES = [
    "runs",
    "ok_runs",
    "unpriced_runs",
    "measured_runs",
    "prompt_tokens",
    "completion_tokens",
    "avoided_nusd",
    "local_nusd",
    "net_nusd",
    "energy_mj",
    "batch_runs",
    "batch_prompt_tokens",
    "batch_completion_tokens",
    "batch_avoided_nusd",
    "batch_net_nusd",
]


class DailyRollup(RollupFigures):
    """Sums of the frozen costs of one workflow's runs on one local model and one node on one
    report day.

    ``day`` is the run's start date in ``OPSDASH_REPORT_TIME_ZONE``. Updated in the finalizing
    transaction; ``rebuild_rollups`` recomputes the same rows from ``RunCost``.
    """

    model = models.ForeignKey(LocalModel, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "workflow", "model", "node"],
                name="savings_rollup_one_row_per_key_node",
            )
        ]
        indexes = [models.Index(fields=["workflow", "day"])]  # a workflow's page

    def __str__(self) -> str:
        return f"{self.day} w{self.workflow_id} m{self.model_id} {self.node}: {self.runs} runs"


class WorkflowDailyRollup(RollupFigures):
    """The same sums without the local model: one row per workflow, node and day.

    Reports that do not split by local model (the overview, the API summary) read these: a
    year of 50 workflows on one node is 18 250 rows instead of one per model too. Updated in
    the same statement pair as ``DailyRollup``; ``rebuild_rollups`` derives it from
    ``DailyRollup``.
    """

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "workflow", "node"],
                name="savings_workflow_rollup_one_row_per_key_node",
            )
        ]
        # Covering indexes (every figure in the index): the overview's grouped reads scan an
        # index alone, in the order they group by, with no sort and no lookup of each row.
        # Day first for the daily sums and sparklines, workflow first for the per-workflow
        # and per-node sums (SQLite skip-scans it for a short range). Measured by
        # bench/savings.py.
        indexes = [
            models.Index(
                fields=["day", "workflow", "node", *ROLLUP_FIGURES], name="sav_wrollup_by_day"
            ),
            models.Index(
                fields=["workflow", "node", "day", *ROLLUP_FIGURES], name="sav_wrollup_by_workflow"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} w{self.workflow_id} {self.node}: {self.runs} runs"


class SavingsAction(models.TextChoices):
    """The savings actions' names in the audit log (``opsdash.core.audit``)."""

    ADD_PRICE = "price.add"
    CLOSE_PRICE = "price.close"
    REFRESH_PRICES = "price.refresh"
    CHANGE_COSTING = "workflow.update"
    RECOMPUTE = "savings.recompute"
    REBUILD = "savings.rebuild"
    SUBSCRIBE_REPORT = "report.subscribe"
    UNSUBSCRIBE_REPORT = "report.unsubscribe"


# ----------------------------------------------------------------------------- scheduled reports


class ReportFrequency(models.TextChoices):
    WEEKLY = "weekly", "weekly (Monday–Sunday)"
    MONTHLY = "monthly", "monthly (calendar month)"


class ReportSubscription(models.Model):
    """A person receives the savings report by email for each complete week or month.

    The address is the user's own (``User.email``), read at send time, so changing it needs no
    change here; ``manage.py send_reports`` sends what is due.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_subscriptions"
    )
    frequency = models.CharField(max_length=10, choices=ReportFrequency.choices)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["user__username", "frequency"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "frequency"], name="savings_one_subscription_per_frequency"
            )
        ]

    def __str__(self) -> str:
        return f"{self.frequency} report for {self.user}"


class DeliveryStatus(models.TextChoices):
    SENDING = "sending"  # claimed by a send_reports run; a stale claim is taken over
    SENT = "sent"
    FAILED = "failed"


class ReportDelivery(models.Model):
    """One report for one subscription and period: at most one row, so a period is sent once.

    A failed delivery keeps its sentence and is tried again by the next ``send_reports``; a
    sent one is never sent again.
    """

    subscription = models.ForeignKey(
        ReportSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    period_start = models.DateField()
    period_end = models.DateField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices)
    recipient = models.CharField(max_length=254, blank=True)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start", "-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start"], name="savings_one_delivery_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subscription} {self.period_start}: {self.status}"

"""Forms of the savings pages: they collect strings; the services validate and refuse."""

from __future__ import annotations

from datetime import datetime

from django import forms

from opsdash.savings.days import report_zone


def parse_moment(text: str, what: str) -> datetime | None:
    """A typed date or date-time (``2025-06-01`` or ``2025-06-01T09:30``); naive values are in
    the report time zone, blank is None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise forms.ValidationError(
            f"The {what} must be a date such as 2025-06-01 or 2025-06-01T09:30."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=report_zone())
    return moment


class PriceForm(forms.Form):
    provider = forms.CharField(max_length=64)
    model = forms.CharField(max_length=128)
    input_price = forms.CharField(max_length=40, label="Input, USD per million tokens")
    output_price = forms.CharField(max_length=40, label="Output, USD per million tokens")
    cached_input_price = forms.CharField(
        max_length=40, required=False, label="Cached input, USD per million tokens"
    )
    batch_input_price = forms.CharField(
        max_length=40, required=False, label="Batch input, USD per million tokens"
    )
    batch_output_price = forms.CharField(
        max_length=40, required=False, label="Batch output, USD per million tokens"
    )
    currency = forms.CharField(max_length=12, required=False, initial="USD")
    effective_from = forms.CharField(max_length=40, required=False, label="Starts")
    note = forms.CharField(max_length=300, required=False)

    def clean_effective_from(self) -> datetime | None:
        return parse_moment(self.cleaned_data.get("effective_from", ""), "start")


class CostingForm(forms.Form):
    baseline_provider = forms.CharField(max_length=64, required=False)
    baseline_model = forms.CharField(max_length=128, required=False)
    electricity_usd_per_kwh = forms.CharField(max_length=40, required=False)
    note = forms.CharField(max_length=300, required=False)


class WorkflowForm(CostingForm):
    """The workflow edit page: what ``runs.workflows.edit_workflow`` takes, as typed."""

    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea)

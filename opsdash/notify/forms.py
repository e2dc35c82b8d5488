"""The channel form of the alert settings page; ``services`` does the checking that matters,
so the page and any later API refuse the same things with the same sentences."""

from __future__ import annotations

from django import forms

from opsdash.accounts.roles import Role
from opsdash.notify.models import ChannelKind, EventKind

#: A channel takes these; "test" is sent to one channel by its button, never subscribed to.
SUBSCRIBABLE = [(k.value, k.label) for k in EventKind if k != EventKind.TEST]


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ChannelKind.choices, initial=ChannelKind.EMAIL)
    target = forms.CharField(
        required=False,
        max_length=2000,
        label="Addresses or URL",
        help_text="Email: addresses separated by commas. Webhook or Slack: the URL to POST to.",
        widget=forms.TextInput(attrs={"placeholder": "ops@example.com, https://hooks…"}),
    )
    roles = forms.MultipleChoiceField(
        required=False,
        choices=[(r.value, r.value) for r in Role],
        widget=forms.CheckboxSelectMultiple,
        label="Also mail everyone with the role",
    )
    events = forms.MultipleChoiceField(
        required=False,
        choices=SUBSCRIBABLE,
        widget=forms.CheckboxSelectMultiple,
        label="Sends",
        initial=[k for k, _ in SUBSCRIBABLE],
    )
    enabled = forms.BooleanField(required=False, initial=True)

"""The savings app's own knobs, read from ``OPSDASH_*`` variables with the project's helpers.

They live here rather than in ``settings.py`` because only this app reads them; a malformed
value still stops the process with ``ImproperlyConfigured`` naming the variable.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured

from opsdash.env import envdecimal


def _cpu_watts() -> Decimal:
    watts = envdecimal("OPSDASH_CPU_WATTS", "10")
    if not Decimal(0) < watts <= Decimal(1000):
        raise ImproperlyConfigured(
            f"OPSDASH_CPU_WATTS must be more than 0 and at most 1000 (watts per busy CPU), "
            f"not {watts}."
        )
    return watts


# What one fully busy logical CPU draws, in watts, for energy estimates where no counter is
# readable. 10 W: a desktop's 125 W over 8 busy cores is ~15 W, a server's 270 W over 32 is ~8 W.
CPU_WATTS: Decimal = _cpu_watts()

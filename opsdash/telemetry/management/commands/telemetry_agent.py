from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from opsdash.telemetry.sampler import Sampler
from opsdash.telemetry.services import AGENTS_GROUP

# channels_redis forgets group members after a day; rejoin well before that.
REJOIN_SECONDS = 3600


class Command(BaseCommand):
    help = (
        "Run the telemetry sampler in this process: frames to the `telemetry` group, minute "
        "rows and alerts to the database, and answers to the web processes' requests for the "
        "latest frame and the 15-minute history. One per node, with "
        "OPSDASH_TELEMETRY_EMBEDDED=false on the web processes and a Redis channel layer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--seconds", type=float, default=None, help="stop after this long (default: run on)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if get_channel_layer() is None:
            raise CommandError("No channel layer is configured (CHANNEL_LAYERS).")
        if settings.TELEMETRY_EMBEDDED:
            self.stderr.write(
                "Note: OPSDASH_TELEMETRY_EMBEDDED is true, so web processes on this host sample "
                "too; set it to false where this agent runs."
            )
        asyncio.run(self.serve(options["seconds"]))

    async def serve(self, seconds: float | None, *, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM) if handle_signals else ():
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if seconds is not None:
            loop.call_later(seconds, stop.set)

        sampler = Sampler.from_settings()
        sampler.start()
        sampler.attach(loop)
        layer = get_channel_layer()
        channel = await layer.new_channel("telemetry.agent.")
        self.stdout.write(
            f"telemetry agent for {sampler.host}: a frame every {sampler.tick_seconds:g} s",
        )
        self.stdout.flush()
        answering = asyncio.create_task(self.answer(layer, channel, sampler))
        try:
            await stop.wait()
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            await layer.group_discard(AGENTS_GROUP, channel)
            await asyncio.to_thread(sampler.stop)

    async def answer(self, layer: Any, channel: str, sampler: Sampler) -> None:
        """Answer ``telemetry.request`` messages: ``latest`` or ``history``."""
        joined: float | None = None
        while True:
            if joined is None or time.monotonic() - joined > REJOIN_SECONDS:
                await layer.group_add(AGENTS_GROUP, channel)
                joined = time.monotonic()
            try:
                message = await asyncio.wait_for(layer.receive(channel), REJOIN_SECONDS)
            except TimeoutError:
                continue
            if message.get("type") != "telemetry.request" or not message.get("reply_to"):
                continue
            if message.get("what") == "history":
                reply = {"type": "telemetry.history", "text": sampler.history_text()}
            else:
                text = sampler.latest_text()
                if text is None:
                    continue
                reply = {"type": "telemetry.answer", "text": text}
            await layer.send(message["reply_to"], reply)

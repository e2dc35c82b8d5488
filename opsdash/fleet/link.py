"""Telling a node something from any hub process: the one way the hub's verbs reach an agent.

The hub process holding a node's socket has its consumer in ``protocol.node_group(name)``; a
channel-layer ``agent.send`` to that group is forwarded to the socket as it is. Admins' verbs
(``services``: status; ``placements``: place, unplace; ``agent_installs``: install) call
``tell_node`` inside the transaction that changes the rows, and the message leaves on commit.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from opsdash.fleet import protocol

logger = logging.getLogger(__name__)


def tell_node(node_name: str, message_type: str, **fields: Any) -> None:
    """Send one ``message_type`` message to node ``node_name``'s agent once the transaction
    commits (at once outside one).

    Best effort by design: if the node is not connected nobody is in its group, and if the
    channel layer is down the message is lost; either way the rows already say what the node
    should be and hold, and it gets all of it in the ``welcome`` of every (re)connect, so a node
    that misses this converges by itself.
    """
    text = protocol.encode(message_type, **fields)

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(
                protocol.node_group(node_name), {"type": "agent.send", "text": text}
            )
        except Exception:
            logger.warning(
                "could not tell node %s %s; it gets it on reconnect",
                node_name,
                message_type,
                exc_info=True,
            )

    transaction.on_commit(send)

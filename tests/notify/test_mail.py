from __future__ import annotations

import pytest

from opsdash.notify.mail import MailFailed, absolute_url, send_email


def test_an_email_with_html_and_an_attachment_reaches_the_smtp_server(smtp):  # type: ignore[no-untyped-def]
    send_email(
        to=["mona@example.com"],
        subject="Weekly savings",
        text="You saved $12.",
        html="<p>You saved <b>$12</b>.</p>",
        attachments=[("savings.csv", b"workflow,avoided_usd\nsupport,12.00\n", "text/csv")],
    )

    assert smtp.envelopes == [("alerts@opsdash.test", ["mona@example.com"])]
    message = smtp.messages[0]
    assert message["Subject"] == "Weekly savings"
    parts = {part.get_content_type(): part for part in message.walk()}
    assert "You saved $12." in parts["text/plain"].get_payload(decode=True).decode()
    assert "<b>$12</b>" in parts["text/html"].get_payload(decode=True).decode()
    assert parts["text/csv"].get_filename() == "savings.csv"
    # Text parts travel with CRLF line ends (as RFC 4180 writes CSV anyway).
    csv = parts["text/csv"].get_payload(decode=True).replace(b"\r\n", b"\n")
    assert csv == b"workflow,avoided_usd\nsupport,12.00\n"


def test_without_an_smtp_host_sending_says_what_to_set(settings):  # type: ignore[no-untyped-def]
    settings.SMTP_HOST = ""
    with pytest.raises(MailFailed, match="set OPSDASH_SMTP_HOST"):
        send_email(to=["a@example.com"], subject="s", text="t")


def test_an_unreachable_smtp_server_is_a_sentence_not_a_crash(settings):  # type: ignore[no-untyped-def]
    settings.SMTP_HOST, settings.SMTP_PORT = "127.0.0.1", 9  # discard port: nothing listens
    settings.SMTP_STARTTLS = settings.SMTP_SSL = False
    with pytest.raises(MailFailed, match="Cannot reach the SMTP server 127.0.0.1:9"):
        send_email(to=["a@example.com"], subject="s", text="t")


def test_links_are_made_absolute_from_the_public_url(settings):  # type: ignore[no-untyped-def]
    settings.PUBLIC_URL = "https://ops.example.com"
    assert absolute_url("/telemetry/?host=gpu1") == "https://ops.example.com/telemetry/?host=gpu1"
    assert absolute_url("https://elsewhere/x") == "https://elsewhere/x"

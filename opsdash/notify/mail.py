"""Email over SMTP, configured by the ``OPSDASH_SMTP_*`` settings, and absolute links.

``send_email`` is the one way OpsDash sends mail: alert deliveries and the scheduled reports
both call it. It always uses Django's SMTP backend with the settings here, never
``EMAIL_BACKEND``, so what the tests exercise (a real SMTP server on loopback) is what runs.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend

from opsdash.core.errors import Code, Refusal

NOT_CONFIGURED = "SMTP is not configured: set OPSDASH_SMTP_HOST (and OPSDASH_EMAIL_FROM)."


class MailFailed(Refusal):
    """Mail could not be sent; the reason says what to fix."""

    default_code = Code.UNAVAILABLE


def smtp_configured() -> bool:
    return bool(settings.SMTP_HOST)


def smtp_summary() -> str:
    """One line for the alert settings page: where mail goes, or what to set."""
    if not smtp_configured():
        return NOT_CONFIGURED
    security = "SSL" if settings.SMTP_SSL else "STARTTLS" if settings.SMTP_STARTTLS else "plain"
    user = f" as {settings.SMTP_USER}" if settings.SMTP_USER else ""
    return (
        f"Mail goes through {settings.SMTP_HOST}:{settings.SMTP_PORT} ({security}){user}, "
        f"from {settings.EMAIL_FROM}."
    )


def absolute_url(path: str) -> str:
    """``settings.PUBLIC_URL`` + ``path``; a path already absolute (``http…``) is kept."""
    if not path or path.startswith(("http://", "https://")):
        return path
    return f"{settings.PUBLIC_URL}/{path.lstrip('/')}"


def _backend() -> EmailBackend:
    return EmailBackend(
        host=settings.SMTP_HOST,
        port=settings.SMTP_PORT,
        username=settings.SMTP_USER or None,
        password=settings.SMTP_PASSWORD or None,
        use_tls=settings.SMTP_STARTTLS,
        use_ssl=settings.SMTP_SSL,
        timeout=settings.SMTP_TIMEOUT_SECONDS,
        fail_silently=False,
    )


def send_email(
    *,
    to: list[str],
    subject: str,
    text: str,
    html: str | None = None,
    attachments: Sequence[tuple[str, bytes, str]] = (),
) -> None:
    """Send one message to ``to`` (a plain-text body, optionally an HTML alternative and
    ``(filename, content, mimetype)`` attachments). Raises ``MailFailed`` with a sentence a
    person can act on: SMTP not configured, no recipient, the server refused or unreachable."""
    if not smtp_configured():
        raise MailFailed(NOT_CONFIGURED)
    recipients = [address.strip() for address in to if address and address.strip()]
    if not recipients:
        raise MailFailed("The message has no recipient: add an address to the channel.")
    message = EmailMultiAlternatives(
        subject=subject.replace("\n", " ")[:250],
        body=text,
        from_email=settings.EMAIL_FROM,
        to=recipients,
        connection=_backend(),
    )
    if html is not None:
        message.attach_alternative(html, "text/html")
    for filename, content, mimetype in attachments:
        message.attach(filename, content, mimetype)
    where = f"{settings.SMTP_HOST}:{settings.SMTP_PORT}"
    try:
        message.send()
    except smtplib.SMTPAuthenticationError as exc:
        raise MailFailed(
            f"The SMTP server {where} refused the sign-in ({exc.smtp_code}): check "
            "OPSDASH_SMTP_USER and OPSDASH_SMTP_PASSWORD."
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(sorted(exc.recipients))
        raise MailFailed(f"The SMTP server {where} refused the recipients {refused}.") from exc
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        raise MailFailed(
            f"The SMTP server {where} answered {exc.smtp_code} {reply}".strip() + "."
        ) from exc
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        raise MailFailed(
            f"Sending through {where} failed: {exc}. Check OPSDASH_SMTP_STARTTLS/SSL."
        ) from exc
    except TimeoutError as exc:
        raise MailFailed(f"The SMTP server {where} did not answer in time.") from exc
    except OSError as exc:
        raise MailFailed(
            f"Cannot reach the SMTP server {where}: {exc.strerror or exc}. Check "
            "OPSDASH_SMTP_HOST and OPSDASH_SMTP_PORT."
        ) from exc

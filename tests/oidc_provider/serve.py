"""The provider process: migrate its own database, add the test users and OpsDash's client,
then serve on the address given (``python -m tests.oidc_provider.serve 127.0.0.1:PORT``)."""

from __future__ import annotations

import os
import sys

#: The provider's people: username → groups. Their password is PASSWORD.
USERS = {"olga": ["ops-team"], "fred": ["finance"]}
PASSWORD = "provider-password-1"


def main(address: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)

    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import get_application_model

    for username, groups in USERS.items():
        user = User.objects.create_user(
            username, email=f"{username}@example.test", password=PASSWORD
        )
        user.first_name = username.capitalize()
        user.save()
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])
    application = get_application_model()
    application.objects.create(
        name="OpsDash",
        client_id=os.environ["PROVIDER_CLIENT_ID"],
        client_secret=os.environ["PROVIDER_CLIENT_SECRET"],
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
        algorithm=application.RS256_ALGORITHM,
        redirect_uris="",  # set by the test once OpsDash's port is known
        skip_authorization=True,  # no consent page: the users are the organisation's own
    )
    call_command("runserver", address, use_reloader=False, use_threading=True, verbosity=0)


if __name__ == "__main__":
    main(sys.argv[1])

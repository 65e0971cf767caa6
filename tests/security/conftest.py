"""The dashboard's fixtures (signed-in browsers) and the webhook receiver, for these tests."""

from tests.test_notifications import webhook  # noqa: F401
from tests.web.conftest import admin_client, make_user  # noqa: F401

"""The policy form's notification fields: who hears about failures and RPO breaches."""

from __future__ import annotations

from app.db.models import AuditEvent, Policy
from tests.web.conftest import form_token
from tests.web.test_policies import create, field_error, policy_form

SECRET = "hook-secret-0123456789abcdef"
# A method that needs no repository, so the form is complete without one.
SNAPSHOT = {"method": "vmfs_snapshot", "consistency": "cold"}


def stored(app, policy_id: int) -> Policy:
    with app.state.runtime.db.session() as session:
        policy = session.get(Policy, policy_id)
        session.expunge(policy)
        return policy


def test_new_policy_form_offers_notifications_ticked(admin_client):
    html = admin_client.get("/policies/new").text
    assert 'name="notify_on" value="failure" checked' in html
    assert 'name="notify_on" value="rpo_breach" checked' in html
    assert 'name="notify_webhook_url"' in html and 'name="notify_emails"' in html
    assert 'name="notify_webhook_secret" type="password"' in html


def test_notifications_are_saved_and_the_secret_never_shown(app, admin_client):
    policy_id = create(
        admin_client,
        **SNAPSHOT,
        notify_on=["rpo_breach"],
        notify_webhook_url="https://hooks.example.com/bulwark",
        notify_webhook_secret=SECRET,
        notify_emails="ops@example.com\nmessaging@example.com, dba@example.com",
    )
    policy = stored(app, policy_id)
    assert policy.notify_on == ["rpo_breach"]
    assert policy.notify_webhook_url == "https://hooks.example.com/bulwark"
    assert policy.notify_emails == ["ops@example.com", "messaging@example.com", "dba@example.com"]
    secrets = app.state.runtime.secrets
    assert secrets.open(policy.notify_webhook_secret_ciphertext, "webhook") == SECRET

    edit = admin_client.get(f"/policies/{policy_id}/edit").text
    assert SECRET not in edit and "A secret is stored; leave empty to keep it." in edit
    assert 'value="https://hooks.example.com/bulwark"' in edit
    assert 'name="notify_on" value="failure">' in edit  # unticked

    # Saving with the secret left empty keeps it; ticking failures is the only change.
    token = form_token(admin_client, f"/policies/{policy_id}/edit")
    response = admin_client.post(
        f"/policies/{policy_id}/edit",
        data=policy_form(
            token,
            **SNAPSHOT,
            notify_on=["failure", "rpo_breach"],
            notify_webhook_url="https://hooks.example.com/bulwark",
            notify_webhook_secret="",
            notify_emails="ops@example.com messaging@example.com dba@example.com",
        ),
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    after = stored(app, policy_id)
    assert sorted(after.notify_on) == ["failure", "rpo_breach"]
    assert after.notify_webhook_secret_ciphertext == policy.notify_webhook_secret_ciphertext
    with app.state.runtime.db.session() as session:
        update = (
            session.query(AuditEvent)
            .filter_by(action="policy.update", object_id=str(policy_id))
            .one()
        )
        assert update.detail["fields"] == ["notify_on"]


def test_bad_notification_fields_are_shown_on_the_form(app, admin_client):
    token = form_token(admin_client, "/policies/new")
    response = admin_client.post(
        "/policies/new",
        data=policy_form(
            token,
            **SNAPSHOT,
            notify_on=["failure"],
            notify_webhook_url="not a url",
            notify_webhook_secret=SECRET,
            notify_emails="ops@example.com not-an-address",
        ),
    )
    assert response.status_code == 422
    assert field_error(response.text, "notify_webhook_url")
    assert field_error(response.text, "notify_emails")
    assert SECRET not in response.text  # the secret is not echoed back
    with app.state.runtime.db.session() as session:
        assert session.query(Policy).count() == 0

"""Annotator accounts on the Label Studio server: add, list, remove (Label Studio 1.23 community edition).

A person gets an account the way the scripted annotator does: a sign-up through
the organization's invite link, with a generated password. The admin token only
reads the invite link, names the account, and (to remove someone) ends their
organization membership, which Label Studio keeps as a soft delete so their
annotations stay attributed. Passwords and the invite token never reach a log:
callers get them back as values and store them as secrets.
"""
from __future__ import annotations

import secrets
from typing import Any

import requests

from .projects import connect


class AccountError(RuntimeError):
    """Label Studio refused an account change; the message says which and why."""


def sign_up(url: str, admin_token: str, email: str, password: str | None = None) -> dict[str, Any]:
    """Create a user through the invite link and log in like a browser; returns {email, password, token}."""
    url = url.rstrip("/")
    password = password or secrets.token_urlsafe(18)
    invite = requests.get(f"{url}/api/invite", headers={"Authorization": f"Token {admin_token}"}, timeout=30)
    invite.raise_for_status()
    with requests.Session() as s:
        signup = f"{url}/user/signup/?token={invite.json()['token']}"
        s.get(signup, timeout=30).raise_for_status()
        r = s.post(signup, data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
                   headers={"Referer": signup}, allow_redirects=False, timeout=30)
        if r.status_code != 302:
            raise AccountError(f"Label Studio refused to sign up {email} (HTTP {r.status_code}); "
                               "does a user with this email exist already?")
        token = s.get(f"{url}/api/current-user/token", timeout=30)
        token.raise_for_status()
    return {"email": email, "password": password, "token": token.json()["token"]}


def _admin(url: str, admin_token: str) -> tuple[requests.Session, int]:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {admin_token}"
    me = session.get(f"{url.rstrip('/')}/api/current-user/whoami", timeout=30)
    me.raise_for_status()
    return session, int(me.json()["active_organization"])


def members(url: str, admin_token: str) -> list[dict[str, Any]]:
    """The organization's active members (Label Studio leaves removed ones out): id, email, name."""
    session, org = _admin(url, admin_token)
    out, page = [], 1
    while True:
        r = session.get(f"{url.rstrip('/')}/api/organizations/{org}/memberships",
                        params={"page": page, "page_size": 100, "contributed_to_projects": 1}, timeout=30)
        r.raise_for_status()
        body = r.json()
        rows = body.get("results", body) if isinstance(body, dict) else body
        for m in rows:
            user = m.get("user") or {}
            name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
            if m.get("deleted_at") is None:
                out.append({"id": user.get("id"), "email": user.get("email"), "name": name})
        if not isinstance(body, dict) or not body.get("next"):
            return out
        page += 1


def add_annotator(url: str, admin_token: str, email: str, name: str = "") -> dict[str, Any]:
    """A new annotator account: signed up, named; returns {id, email, password, token} (keep the last two secret)."""
    if "@" not in email or email.strip() != email or len(email) > 254:
        raise AccountError(f"{email!r} is not an e-mail address")
    if any(m["email"] == email for m in members(url, admin_token)):
        raise AccountError(f"{email} already has an account (`alignline annotators list`)")
    cred = sign_up(url, admin_token, email)
    user = connect(url, cred["token"]).users.whoami()
    if name:
        first, _, last = name.partition(" ")
        session, _ = _admin(url, admin_token)
        r = session.patch(f"{url.rstrip('/')}/api/users/{user.id}", json={"first_name": first, "last_name": last},
                          timeout=30)
        if r.status_code >= 400:
            raise AccountError(f"{email}: account created but naming it failed (HTTP {r.status_code})")
    return {"id": user.id, **cred}


def remove_annotator(url: str, admin_token: str, email: str) -> int:
    """End the person's membership (their annotations stay, attributed to them); returns their user id."""
    found = [m for m in members(url, admin_token) if m["email"] == email]
    if not found:
        raise AccountError(f"{email} is not an active member (`alignline annotators list`)")
    session, org = _admin(url, admin_token)
    r = session.delete(f"{url.rstrip('/')}/api/organizations/{org}/memberships/{found[0]['id']}/", timeout=30)
    if r.status_code not in (200, 204):
        raise AccountError(f"Label Studio refused to remove {email} (HTTP {r.status_code}: {r.text[:200]})")
    return int(found[0]["id"])

"""Annotator accounts against the real Label Studio: add (named, can sign in), list, remove (annotations kept)."""
import stat
import uuid

import pytest

from alignline.annotation import AccountError, connect
from alignline.flows.annotate import run_annotators
from alignline.infra.paths import read_secret

pytestmark = pytest.mark.integration


def test_add_list_remove_an_annotator(servers, capsys):
    email = f"ada-{uuid.uuid4().hex[:6]}@example.org"
    added = run_annotators(servers, "add", email, "Ada Lovelace")
    secret = read_secret(servers.home, f"annotator-{email}")
    assert secret["email"] == email and secret["password"] not in str(added)  # the password stays in its file
    path = servers.home / "secrets" / f"annotator-{email}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = run_annotators(servers, "list")
    assert listed[email] == f"id {added['user_id']}, Ada Lovelace"
    with pytest.raises(AccountError, match="already has an account"):
        run_annotators(servers, "add", email)

    removed = run_annotators(servers, "remove", email)
    assert removed["user_id"] == added["user_id"]
    assert email not in run_annotators(servers, "list")  # Label Studio lists active members only
    with pytest.raises(AccountError, match="is not an active member"):
        run_annotators(servers, "remove", email)
    assert secret["password"] not in capsys.readouterr().out


def test_the_new_account_signs_in_with_its_password(servers):
    import requests

    email = f"grace-{uuid.uuid4().hex[:6]}@example.org"
    run_annotators(servers, "add", email)
    password = read_secret(servers.home, f"annotator-{email}")["password"]
    url = servers.servers.url(servers.servers.label_studio_port)
    with requests.Session() as s:
        login = f"{url}/user/login/"
        s.get(login, timeout=30)
        r = s.post(login, data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
                   headers={"Referer": login}, allow_redirects=False, timeout=30)
        assert r.status_code == 302
        assert s.get(f"{url}/api/current-user/whoami", timeout=30).json()["email"] == email

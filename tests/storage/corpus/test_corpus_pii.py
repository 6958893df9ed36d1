from alignline.storage.corpus import Document, ScrubPII, run_steps, scrub_pii


def test_each_kind_replaced_and_counted():
    text = ("Write to Jane Doe <jane.doe@example.org> or ops+alerts@mail.example.co.uk. "
            "The server is at 192.168.10.7 and 2001:db8::8a2e:370:7334; call +1 415-555-0132 or (212) 555-0199 "
            "or 650.555.0100.")
    out, counts = scrub_pii(text)
    assert counts == {"email": 2, "ip_address": 2, "phone": 3}
    assert "<EMAIL>" in out and "<IP_ADDRESS>" in out and "<PHONE>" in out
    assert "example" not in out and "192.168" not in out and "555" not in out


def test_lookalikes_are_left_alone():
    text = ("Copyright 1998-2003, 2005 by the authors. Version 3.11.7 and 2.0 use std::vector and a::b. "
            "Set ratio 0.25 at 999.1.2.3, in 2024 2025 2026.")
    out, counts = scrub_pii(text)
    assert out == text and counts == {"email": 0, "ip_address": 0, "phone": 0}


def test_step_counts_edits_and_uses_configured_placeholders():
    docs = [Document("a", "mail me at a@b.io", "t"), Document("b", "nothing here", "t")]
    kept, stats, dropped = run_steps([ScrubPII(email="[EMAIL]")], docs)
    assert kept[0].text == "mail me at [EMAIL]" and not dropped
    assert stats[0].counters["replaced_email"] == 1 and stats[0].counters["documents_with_pii"] == 1

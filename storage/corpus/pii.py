"""PII scrubbing: e-mail addresses, IP addresses and phone numbers become typed placeholders.

Llama 2 §2.1 removes data from sites known to hold much personal information;
inside kept documents we replace what remains (licence files and man pages are
full of maintainers' addresses). The same patterns back the validation suite's
"no PII left" expectation.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Sequence

from .documents import Document, StepLog

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]*\w)")
# Broad IPv6 candidates; kept only if `ipaddress` parses them and they contain a digit (not C++'s a::b).
IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# International (+CC ...), (NNN) NNN-NNNN, or NNN-NNN-NNNN; bare digit runs (years, versions) are left alone.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
                   r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w])")


def _is_ipv6(text: str) -> bool:
    if not any(c.isdigit() for c in text) or text.count(":") < 2:
        return False
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def scrub_pii(text: str, email: str = "<EMAIL>", ip: str = "<IP_ADDRESS>", phone: str = "<PHONE>") -> tuple[str, dict[str, int]]:
    """Text with PII replaced, and how many of each kind were replaced."""
    counts = {"email": 0, "ip_address": 0, "phone": 0}

    def sub(pattern: re.Pattern, placeholder: str, kind: str, check=None):
        def replace(match: re.Match) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return placeholder
        return lambda s: pattern.sub(replace, s)

    for step in (sub(EMAIL, email, "email"), sub(IPV6_CANDIDATE, ip, "ip_address", _is_ipv6),
                 sub(IPV4, ip, "ip_address"), sub(PHONE, phone, "phone")):
        text = step(text)
    return text, counts


class ScrubPII:
    name = "pii"

    def __init__(self, email: str = "<EMAIL>", ip: str = "<IP_ADDRESS>", phone: str = "<PHONE>"):
        self.placeholders = {"email": email, "ip": ip, "phone": phone}

    def run(self, docs: Sequence[Document], log: StepLog) -> list[Document]:
        for doc in docs:
            doc.text, counts = scrub_pii(doc.text, **self.placeholders)
            for kind, n in counts.items():
                log.count(f"replaced_{kind}", n)
            if any(counts.values()):
                log.count("documents_with_pii")
        return list(docs)

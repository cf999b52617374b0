"""Personal data in text: find, count, mask and replace it.

Types, matched in this order (each match is replaced before the next type is looked for, so a
URL's digits are never counted as a phone number). URLs are links, counted apart from personal
data (news and reviews cite links that identify no one); anonymization replaces them too:

| type | what | placeholder |
|---|---|---|
| url | `http://`, `https://`, `ftp://` or `www.` addresses | `[URL]` |
| email | `name@domain.tld` | `[EMAIL]` |
| ip | IPv4 addresses with octets 0-255 | `[IP]` |
| card | 13-19 digits, optionally in groups, that pass the Luhn check | `[CARD]` |
| phone | `+` and 8-15 digits; `(555) 123-4567`; 10-11 digits from a 0 (`08712460324`) | `[PHONE]` |

Numbers starting with 0 may be grouped (`07700 900123`). These are patterns, not
understanding: names and street addresses are not found, and a 10-digit number that starts
with 0 is taken for a phone number.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

PLACEHOLDERS = {"url": "[URL]", "email": "[EMAIL]", "ip": "[IP]", "card": "[CARD]",
                "phone": "[PHONE]"}
LINKS = ("url",)
PERSONAL = tuple(k for k in PLACEHOLDERS if k not in LINKS)

_URL = re.compile(r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'()\[\]]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IP = re.compile(r"(?<![\d.])\b\d{1,3}(?:\.\d{1,3}){3}\b(?!\.\d)")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"           # international
    r"|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"            # North American
    r"|\b0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}\b"           # trunk prefix 0 (UK, Europe)
    r")(?![\w])")
_TRAILING = ".,;:!?"


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that payment card numbers satisfy."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _accept_url(match: str) -> tuple[str, str]:
    kept = match.rstrip(_TRAILING)
    return kept, match[len(kept):]


def _accept_ip(match: str) -> bool:
    return all(int(octet) <= 255 and (octet == "0" or not octet.startswith("0"))
               for octet in match.split("."))


def _accept_card(match: str) -> bool:
    digits = _digits(match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _accept_phone(match: str) -> bool:
    count = len(_digits(match))
    if match.startswith("+"):
        return 8 <= count <= 15
    return 10 <= count <= 11


def mask(kind: str, value: str) -> str:
    """A form of `value` that shows what was found without revealing it."""
    if kind == "email":
        user, _, domain = value.partition("@")
        host, _, tld = domain.rpartition(".")
        return f"{user[:1]}***@{host[:1]}***.{tld}"
    if kind == "url":
        scheme, sep, rest = value.partition("://")
        rest = rest if sep else scheme
        return f"{scheme + sep if sep else ''}{rest[:4]}***"
    if kind == "ip":
        return ".".join(value.split(".")[:2] + ["*", "*"])
    digits = _digits(value)
    keep = 4 if kind == "card" else 2
    return "*" * (len(digits) - keep) + digits[-keep:]


def _substitute(text: str, pattern: re.Pattern, kind: str, accept: Callable | None,
                found: list) -> str:
    def replace(match: re.Match) -> str:
        value, tail = match.group(0), ""
        if kind == "url":
            value, tail = _accept_url(value)
        elif accept is not None and not accept(value):
            return match.group(0)
        found.append((kind, value))
        return PLACEHOLDERS[kind] + tail
    return pattern.sub(replace, text)


_STEPS = (("url", _URL, None), ("email", _EMAIL, None), ("ip", _IP, _accept_ip),
          ("card", _CARD, _accept_card), ("phone", _PHONE, _accept_phone))
# Cheap pre-checks (most texts have no personal data): a text that fails a type's check
# cannot contain that type, so its slower pattern is skipped.
_NUMBERS = re.compile(r"\d[\d .()-]{5,}\d")


def _may_contain(text: str) -> dict[str, bool]:
    numbers = _NUMBERS.search(text) is not None
    return {"url": "://" in text or "www." in text or "WWW." in text, "email": "@" in text,
            "ip": numbers, "card": numbers, "phone": numbers}


def _anonymize_one(text: str, found: list) -> str:
    present = _may_contain(text)
    for kind, pattern, accept in _STEPS:
        if present[kind]:
            text = _substitute(text, pattern, kind, accept, found)
    return text


def anonymize_texts(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Replace personal data with typed placeholders; return the texts and counts per type.

    >>> anonymize_texts(["mail bob@example.com or call +44 20 7946 0958"])
    (['mail [EMAIL] or call [PHONE]'], {'url': 0, 'email': 1, 'ip': 0, 'card': 0, 'phone': 1})
    """
    counts = dict.fromkeys(PLACEHOLDERS, 0)
    out = []
    for text in texts:
        found: list = []
        out.append(_anonymize_one(str(text), found))
        for kind, _ in found:
            counts[kind] += 1
    return out, counts


def scan_texts(texts: Iterable[str], examples: int = 5) -> dict:
    """Count personal data by type (matches, texts containing it, masked examples), and links
    apart: `texts_with_personal_data` and `fraction` leave links out."""
    matches = dict.fromkeys(PLACEHOLDERS, 0)
    texts_with = dict.fromkeys(PLACEHOLDERS, 0)
    shown: dict[str, list] = {k: [] for k in PLACEHOLDERS}
    affected = linking = total = 0
    for index, text in enumerate(texts):
        total += 1
        found: list = []
        _anonymize_one(str(text), found)
        kinds = {k for k, _ in found}
        affected += bool(kinds - set(LINKS))
        linking += bool(kinds & set(LINKS))
        for kind in kinds:
            texts_with[kind] += 1
        for kind, value in found:
            matches[kind] += 1
            if len(shown[kind]) < examples:
                shown[kind].append({"index": index, "masked": mask(kind, value)})

    def entry(kind):
        return {"matches": matches[kind], "texts": texts_with[kind], "examples": shown[kind]}
    return {
        "texts": total,
        "texts_with_personal_data": affected,
        "fraction": affected / total if total else 0.0,
        "by_type": {k: entry(k) for k in PERSONAL},
        "links": {**entry("url"), "fraction": linking / total if total else 0.0},
    }


def anonymize_dataset(data):
    """A copy of a text `Dataset` with personal data replaced in every split.

    What was replaced, per split and type, is recorded in `notes["anonymized"]`.
    """
    import dataclasses

    import numpy as np

    if data.kind != "text":
        return data
    splits, counts = {}, {}
    for split, field in (("train", "x_train"), ("validation", "x_val"), ("test", "x_test")):
        texts, counts[split] = anonymize_texts(getattr(data, field))
        splits[field] = np.array(texts, dtype=object)
    return dataclasses.replace(data, **splits, notes={**data.notes, "anonymized": counts})

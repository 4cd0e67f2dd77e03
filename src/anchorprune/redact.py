"""The one way a URL that may carry secrets is shown: in messages, log lines, reports and MLflow tags.

``redact_url`` parses the URL and replaces the user and password with ``***`` and the value of
every query parameter that looks like a secret (password, token, key, signature, credential...)
with ``***``. The host is found after the *last* ``@`` of the authority, so a password that
contains ``@``, ``:`` or ``%`` (raw or percent-encoded) never shows, not even in part.
``redact_text`` does the same for every URL inside a free text (an exception's message, say).

>>> redact_url("http://mlu:p@ss:w%rd@127.0.0.1:9/api?x=1&token=abc")
'http://***@127.0.0.1:9/api?x=1&token=***'
>>> redact_url("https://es.example.com:9243")
'https://es.example.com:9243'
>>> redact_text("API request to http://u:pw@host:5000/api failed")
'API request to http://***@host:5000/api failed'
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"

#: query parameters whose value is a secret (matched as a substring of the lower-cased name)
SECRET_PARAMS = ("pass", "pwd", "secret", "token", "key", "sig", "cred", "auth", "session")

# scheme://authority, then whatever follows up to white space or a quote/bracket
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        if eq and any(s in name.lower() for s in SECRET_PARAMS):
            item = f"{name}={MASK}"
        parts.append(item)
    return "&".join(parts)


def redact_url(url: object) -> str:
    """``url`` with user, password and secret query values replaced by ``***`` (anything else unchanged).

    Not a URL (no ``scheme://``), e.g. a local path: returned as is, apart from a ``user:pass@``
    prefix, which is masked as well.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    # the user info ends at the last "@" before the path's first "/" (a password may hold "@", ":",
    # "%", "?" or "#", not a raw "/"); the host then ends at the first "/", "?" or "#"
    slash = rest.find("/")
    at = rest.rfind("@", 0, slash if slash != -1 else len(rest))
    end = min([i for i in (rest.find(c, at + 1) for c in "/?#") if i != -1] or [len(rest)])
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        tail = f"{path}?{_redact_query(query)}{hash_}{fragment}"
    return f"{scheme}://{authority}{tail}"


def redact_text(text: object) -> str:
    """``text`` with every ``scheme://...`` URL in it passed through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), str(text))

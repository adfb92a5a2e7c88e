"""Keeping configured secrets out of every text that leaves the process."""

from __future__ import annotations


class Redactor:
    """Removes every configured secret from text bound for logs, metrics or pages."""

    def __init__(self, secrets: list[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

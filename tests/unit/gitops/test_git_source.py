"""The git adapter's message helpers: a credential in a repository URL never reaches a
delivery's message, wherever git quotes the URL in its error line."""

from __future__ import annotations

import pytest

from shipway.services.git_source import _last_line, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://tok3n@github.com/acme/m.git", "https://***@github.com/acme/m.git"),
        ("https://user:pa55@gitlab.example/a/b", "https://***@gitlab.example/a/b"),
        ("ssh://git@host:22/repo.git", "ssh://***@host:22/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("git@github.com:acme/m.git", "git@github.com:acme/m.git"),  # scp-like: a user only
        (
            "fatal: unable to access 'https://x-token:ghp_abc@github.com/a/b.git/': 403",
            "fatal: unable to access 'https://***@github.com/a/b.git/': 403",
        ),
        (
            "from https://a@h1/x and http://b:c@h2/y",
            "from https://***@h1/x and http://***@h2/y",
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_last_line_of_git_s_stderr_is_redacted() -> None:
    stderr = (
        b"warning: something\n"
        b"fatal: repository 'https://oauth2:glpat-SECRET@gitlab.example/g/p.git/' not found\n"
        b"\n"
    )
    line = _last_line(stderr)
    assert "glpat-SECRET" not in line and "oauth2" not in line
    assert line == "fatal: repository 'https://***@gitlab.example/g/p.git/' not found"
    assert _last_line(b"") == "no message"

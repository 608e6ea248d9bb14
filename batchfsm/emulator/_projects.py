"""Projects: which API key sees which files and batches.

The live API scopes files and batches to the project of the API key a request
carries: another project's id answers exactly as an unknown one. The emulator
does the same: each stored object keeps its project (:data:`DEFAULT_PROJECT`
unless told), every lookup of the API is filtered by the caller's project in
the store's own query, and :class:`ApiKeys` says which project a request's
``Authorization`` header belongs to.

A setting of keys is ``KEY`` (the default project) or ``KEY=PROJECT``, split
at the last ``=``: a key holding ``=`` is given as ``KEY=PROJECT``, and one
that ends with ``=`` (base64 padding) stays a plain key.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping

__all__ = [
    "API_KEY",
    "DEFAULT_PROJECT",
    "PROJECT",
    "ApiKeys",
    "check_api_key",
    "check_project",
    "parse_key",
]

#: The project of every object stored without one: what the in-process
#: :class:`Emulator` uses when no project is named, what a server without
#: projects (or a plain ``--api-key KEY``) serves, and where the objects of
#: a database made before projects go.
DEFAULT_PROJECT = "proj_default"

#: What an API key may be: printable ASCII, no spaces, as a header carries it.
API_KEY = re.compile(r"[!-~]+")
#: What a project may be called: letters, digits, ``_`` and ``-``, 1 to 64.
PROJECT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_api_key(key: str | None, name: str = "api_key") -> str | None:
    """``key`` if a request can carry it (or None); a one-line ValueError if not.

    A key is one or more printable ASCII characters without spaces: an empty
    one, or one with spaces or other characters, would refuse every request.
    The message names the setting ``name`` and never shows the key.
    """
    if key is not None and not API_KEY.fullmatch(key):
        what = "it is empty" if not key else "it holds other characters"
        raise ValueError(
            f"{name} must be one or more printable ASCII characters without "
            f"spaces: {what}"
        )
    return key


def check_project(project: str, name: str = "project") -> str:
    """``project`` if it is a project's name; a one-line ValueError if not.

    Example:
        >>> check_project("proj_team-a")
        'proj_team-a'
    """
    if not isinstance(project, str) or not PROJECT.fullmatch(project):
        raise ValueError(
            f"{name} must be 1 to 64 letters, digits, '_' or '-', got {project!r}"
        )
    return project


def parse_key(setting: str, name: str = "api_key") -> tuple[str, str]:
    """``KEY`` or ``KEY=PROJECT`` as (key, project); a ValueError naming ``name``.

    Example:
        >>> parse_key("sk-a=team_a"), parse_key("sk-b"), parse_key("c2s=")
        (('sk-a', 'team_a'), ('sk-b', 'proj_default'), ('c2s=', 'proj_default'))
    """
    key, equals, project = setting.rpartition("=")
    if not equals or not project:
        key, project = setting, DEFAULT_PROJECT
    check_api_key(key, name)
    check_project(project, f"{name}'s project")
    return key, project


class ApiKeys:
    """The API keys a server accepts, each bound to its project.

    Args:
        keys: key to project.

    Raises:
        ValueError: a key no request could carry, or a project's name that is
            not one (the message never shows a key).

    Example:
        >>> keys = ApiKeys({"sk-a": "team_a", "sk-b": "team_b"})
        >>> keys.project("Bearer sk-b"), keys.project("Bearer sk-c")
        ('team_b', None)
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        for key, project in keys.items():
            check_api_key(key)
            check_project(project)
        # The headers as bytes, made once: a request compares against all.
        self._headers = [
            (f"Bearer {key}".encode(), project) for key, project in keys.items()
        ]

    def __len__(self) -> int:
        return len(self._headers)

    def project(self, authorization: str) -> str | None:
        """The project of the key ``authorization`` carries; None if no key.

        In constant time for a given set of keys: every key is compared,
        each with :func:`secrets.compare_digest`, whichever matches.
        """
        given = authorization.encode()
        found = None
        for header, project in self._headers:
            if secrets.compare_digest(given, header):
                found = project
        return found

    @classmethod
    def parse(cls, settings: Iterable[str], name: str = "api_key") -> ApiKeys:
        """Keys from ``KEY`` and ``KEY=PROJECT`` settings (see :func:`parse_key`).

        A key given twice for two projects is a ValueError.
        """
        keys: dict[str, str] = {}
        for setting in settings:
            key, project = parse_key(setting, name)
            if keys.setdefault(key, project) != project:
                raise ValueError(f"{name}: a key is bound to two projects")
        return cls(keys)

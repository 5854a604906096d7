"""Fixtures of the reliability suite (defined in helpers.py beside the functions the tests import)."""

from __future__ import annotations

from tests.reliability.helpers import pg, write_space  # noqa: F401

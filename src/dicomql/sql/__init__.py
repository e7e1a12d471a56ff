"""The SQL engine: StackQL's dialect for google.healthcare, from text to API calls and rows."""

from __future__ import annotations

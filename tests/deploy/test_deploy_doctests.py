"""The ``>>>`` examples in the deploy modules' docstrings hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from dicomql.deploy import queries, render


@pytest.mark.parametrize("module", [queries, render], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module: ModuleType) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

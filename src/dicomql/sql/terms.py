"""Terms of a WHERE or ON clause: its AND-ed conjuncts and the Python values of literals."""

from __future__ import annotations

from typing import Any

from sqlglot import exp


def literal_value(node: exp.Expr) -> Any:
    """The Python value of a literal node (string, number, boolean, NULL), else raise."""
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        value = literal_value(node.this)
        return -value
    raise ValueError(node.sql())


def is_literal(node: exp.Expr) -> bool:
    try:
        literal_value(node)
    except ValueError:
        return False
    return True


def conjuncts(condition: exp.Expr | None) -> list[exp.Expr]:
    """The AND-ed terms of a condition."""
    if condition is None:
        return []
    if isinstance(condition, exp.Where):
        return conjuncts(condition.this)
    if isinstance(condition, exp.Paren):
        return conjuncts(condition.this)
    if isinstance(condition, exp.And):
        return conjuncts(condition.left) + conjuncts(condition.right)
    return [condition]

"""Just enough PromQL handling for the checks: Grafana macros, metric names, comparisons as bool."""

from __future__ import annotations

import re

# What Grafana substitutes at query time; 5 minutes keeps a test's burst of traffic in every window.
GRAFANA_MACROS = {"$__rate_interval": "5m"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def expand_grafana(expr: str) -> str:
    """``expr`` as Grafana sends it to Prometheus."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels, keywords or durations)."""
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRING.sub('""', expr))))
    return {name for name in _IDENTIFIER.findall(bare) if name not in KEYWORDS}


def as_bool(expr: str) -> str:
    """Every comparison outside label matchers turned into ``bool``: the same series, valued 0 or 1.

    An alert expression filters to nothing while all is well; its bool form returns data exactly when
    every series it compares exists, which is what catches a misspelt metric or label.
    """
    parts, last = [], 0
    for matcher in [*_MATCHERS.finditer(expr), None]:
        end = matcher.start() if matcher else len(expr)
        parts.append(_COMPARISON.sub(r"\1 bool", expr[last:end]))
        if matcher:
            parts.append(matcher.group())
            last = matcher.end()
    return "".join(parts)

"""One line per intervention verdict, for the terminal (``whyspike probe``, ``whyspike demo``)."""

from __future__ import annotations


def intervention_lines(interventions: list[dict], bullet: str = "- ", error_indent: str = "    ") -> list[str]:
    """``NAME: VERDICT — message (effect, p)`` and its replicas' errors, for each intervention of a probe result."""
    lines = []
    for v in interventions:
        stats = []
        if v.get("effect_size") is not None:
            stats.append(f"effect {v['effect_size']:+.1f} sd")
        if v.get("p_value") is not None:
            stats.append(f"p={v['p_value']:.2g}")
        tail = f" ({', '.join(stats)})" if stats else ""
        lines.append(f"{bullet}{v['name']}: {v['verdict'].upper()} — {v.get('message', '')}{tail}")
        lines += [f"{error_indent}error: {err}" for err in v.get("errors") or []]
    return lines

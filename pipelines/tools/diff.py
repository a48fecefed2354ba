"""`spineforge diff A B`: what changed between two published versions."""
from __future__ import annotations

from pathlib import Path

from pipelines.io.remote_version import open_version
from schemas.manifest import Col


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def diff_versions(a: str | Path, b: str | Path, store=None, cache_dir: str | Path | None = None) -> dict:
    """Two versions, each a folder or an s3:// version (tables only are fetched, through the cache)."""
    va, vb = open_version(a, cache_dir, store=store), open_version(b, cache_dir, store=store)
    card_a, card_b = va.card, vb.card
    cases_a, cases_b = va.cases.set_index(Col.CASE_ID), vb.cases.set_index(Col.CASE_ID)
    common = cases_a.index.intersection(cases_b.index)
    changed = [c for c in common if cases_a.loc[c, Col.INPUT_SHA256] != cases_b.loc[c, Col.INPUT_SHA256]]
    status = [c for c in common if c not in changed and cases_a.loc[c, Col.QC_STATUS] != cases_b.loc[c, Col.QC_STATUS]]
    conf_a, conf_b = _flatten(card_a.config), _flatten(card_b.config)
    config = {k: {"a": conf_a.get(k), "b": conf_b.get(k)} for k in sorted(set(conf_a) | set(conf_b))
              if conf_a.get(k) != conf_b.get(k)}
    ca, cb = _flatten(card_a.counts.model_dump()), _flatten(card_b.counts.model_dump())
    counts = {k: {"a": ca.get(k, 0), "b": cb.get(k, 0)} for k in sorted(set(ca) | set(cb)) if ca.get(k, 0) != cb.get(k, 0)}
    result = {
        "a": f"{card_a.name} {card_a.version} ({card_a.build_id})",
        "b": f"{card_b.name} {card_b.version} ({card_b.build_id})",
        "same_build": card_a.build_id == card_b.build_id,
        "cases_added": sorted(cases_b.index.difference(cases_a.index)),
        "cases_removed": sorted(cases_a.index.difference(cases_b.index)),
        "cases_changed": sorted(changed),
        "cases_qc_changed": sorted(status),
        "config_changes": config,
        "count_changes": counts,
        "code_version": {"a": card_a.code_version, "b": card_b.code_version},
    }
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    if result["same_build"]:
        lines.append("identical build_id: same inputs, config, code and seed")
    for key, label in (("cases_added", "added"), ("cases_removed", "removed"), ("cases_changed", "changed content"),
                       ("cases_qc_changed", "changed QC status")):
        lines.append(f"cases {label}: {len(result[key])}" + (f"  ({', '.join(result[key][:20])})" if result[key] else ""))
    lines.append(f"config changes: {len(config)}")
    lines += [f"  {k}: {v['a']!r} -> {v['b']!r}" for k, v in config.items()]
    lines.append(f"count changes: {len(counts)}")
    lines += [f"  {k}: {v['a']} -> {v['b']}" for k, v in counts.items()]
    result["text"] = "\n".join(lines)
    return result

"""Measuring search on labelled queries: hit@1, hit@5, MRR@k and recall@k per mode and per query
class, by document (each mode ranks articles by their best passage).

A labelled query is one JSON line: `query`, `relevant` (doc ids or source file names/stems), and
optionally `class` (or `kind`), `split`, and the search filters `since`, `until`, `source`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from newsindex.queries.modes import MODES
from newsindex.queries.named import QueryError
from newsindex.queries.search import Filters, search
from newsindex.queries.session import session

ALL = "all"


def load_labelled(path: str | Path, split: str | None = None) -> list[dict]:
    """The labelled queries of `path`, only those of `split` when given (None or "all": every one)."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise QueryError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("query"), str) or not isinstance(item.get("relevant"), list) or not item["relevant"]:
            raise QueryError(f'{path}:{number}: expected {{"query": "...", "relevant": ["doc id", ...]}}')
        item["class"] = str(item.get("class") or item.get("kind") or "unclassed")
        for key in ("since", "until"):
            if item.get(key) is not None:
                try:
                    item[key] = dt.date.fromisoformat(str(item[key]))
                except ValueError:
                    raise QueryError(f"{path}:{number}: {key} {item[key]!r} is not a date (YYYY-MM-DD)") from None
        items.append(item)
    if not items:
        raise QueryError(f"{path}: no labelled queries")
    if split and split != ALL:
        splits = sorted({str(i.get("split")) for i in items if i.get("split")})
        items = [i for i in items if i.get("split") == split]
        if not items:
            raise QueryError(f"{path}: no queries in split {split!r}" + (f"; it has {', '.join(splits)}" if splits else "; it has no splits"))
    return items


def _labels_of(source_path: str, doc_id: str) -> set[str]:
    """A label names a document by id, or by its source file (name or stem), so a labelled set
    stays valid wherever the corpus lives."""
    name = Path(source_path).name
    return {doc_id, name, Path(name).stem}


def _check_coverage(con, labelled: list[dict]) -> list[str]:
    """Warnings for labelled documents the warehouse lacks; an error when it holds none of them."""
    stored: set[str] = set()
    for doc_id, source_path in con.execute("SELECT doc_id, source_path FROM documents").fetchall():
        stored |= _labels_of(source_path, doc_id)
    wanted = {label for item in labelled for label in item["relevant"]}
    missing = sorted(wanted - stored)
    if len(missing) == len(wanted):
        raise QueryError(
            f"the warehouse holds none of the {len(wanted)} labelled documents (such as {missing[0]!r}); "
            "ingest the labelled corpus into it first, or pass --db"
        )
    if missing:
        return [f"{len(missing)} of {len(wanted)} labelled documents are not in the warehouse (such as {missing[0]!r}); their queries count as misses"]
    return []


def evaluate(db, labelled: list[dict], k: int = 10, modes: list[str] | None = None, fusion: dict | None = None) -> dict:
    """Metrics for each mode, overall and per class. `fusion` is passed to hybrid (for tuning)."""
    classes = sorted({item["class"] for item in labelled})
    report = {"k": k, "queries": len(labelled), "classes": {c: sum(i["class"] == c for i in labelled) for c in classes}, "modes": [], "warnings": []}
    with session(db) as con:
        report["warnings"] = _check_coverage(con, labelled)
        for mode in modes or list(MODES):
            report["modes"].append(_evaluate_mode(con, labelled, k, mode, fusion))
    return report


def _evaluate_mode(con, labelled: list[dict], k: int, mode: str, fusion: dict | None) -> dict:
    depth = max(k, 5)
    per_query = []
    for item in labelled:
        filters = Filters(since=item.get("since"), until=item.get("until"), source=item.get("source"))
        result = search(con, item["query"], k=depth, mode=mode, per_doc=True, filters=filters, fusion=fusion if MODES[mode].side is None else None)
        relevant = set(item["relevant"])
        ranks = [h.rank for h in result.hits if _labels_of(h.source_path, h.doc_id) & relevant]
        found = {label for h in result.hits[:k] for label in _labels_of(h.source_path, h.doc_id) & relevant}
        per_query.append({
            "query": item["query"], "class": item["class"], "first_relevant_rank": ranks[0] if ranks else None,
            "recall": len(found) / len(relevant),
            "top": [h.doc_id for h in result.hits[:3]],
        })  # fmt: skip
    summary = {"mode": mode, **_metrics(per_query, k), "classes": {}}
    for cls in sorted({q["class"] for q in per_query}):
        summary["classes"][cls] = _metrics([q for q in per_query if q["class"] == cls], k)
    summary["per_query"] = per_query
    return summary


def _metrics(per_query: list[dict], k: int) -> dict:
    n = len(per_query)
    firsts = [q["first_relevant_rank"] for q in per_query]
    return {
        "queries": n,
        "hit@1": sum(r == 1 for r in firsts) / n,
        "hit@5": sum(r is not None and r <= 5 for r in firsts) / n,
        "mrr": sum(1.0 / r for r in firsts if r is not None and r <= k) / n,
        "recall": sum(q["recall"] for q in per_query) / n,
    }

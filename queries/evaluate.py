"""Measuring search on labelled queries: hit@1, hit@5, MRR@k and recall@k per mode, by document."""

from __future__ import annotations

import json
from pathlib import Path

from newsindex.queries.named import QueryError
from newsindex.queries.search import MODES, search
from newsindex.queries.session import session


def load_labelled(path: str | Path) -> list[dict]:
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
        items.append(item)
    if not items:
        raise QueryError(f"{path}: no labelled queries")
    return items


def _matches(hit, label: str) -> bool:
    """A label names a document by id, or by its source file (name or stem), so a labelled set
    stays valid wherever the corpus lives."""
    name = Path(hit.source_path).name
    return label in (hit.doc_id, name, Path(name).stem)


def evaluate(db: str | Path, labelled: list[dict], k: int = 10, modes: list[str] | None = None) -> dict:
    report = {"k": k, "queries": len(labelled), "modes": []}
    with session(db) as con:
        for mode in modes or list(MODES):
            report["modes"].append(_evaluate_mode(con, labelled, k, mode))
    return report


def _evaluate_mode(con, labelled: list[dict], k: int, mode: str) -> dict:
    hit1 = hit5 = mrr = recall = 0.0
    per_query = []
    for item in labelled:
        result = search(con, item["query"], k=max(k, 5), mode=mode, per_doc=True)
        ranked = result.hits[: max(k, 5)]
        relevant = item["relevant"]
        first = next((h.rank for h in ranked if any(_matches(h, r) for r in relevant)), None)
        found = {r for r in relevant for h in ranked[:k] if _matches(h, r)}
        hit1 += first == 1
        hit5 += first is not None and first <= 5
        mrr += 1.0 / first if first is not None and first <= k else 0.0
        recall += len(found) / len(relevant)
        per_query.append({"query": item["query"], "first_relevant_rank": first})
    n = len(labelled)
    return {"mode": mode, "queries": n, "hit@1": hit1 / n, "hit@5": hit5 / n, "mrr": mrr / n, "recall": recall / n, "per_query": per_query}

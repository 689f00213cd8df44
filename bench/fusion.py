"""Compare ways of fusing semantic and keyword search, at document level, on the labelled set.

    python bench/fusion.py --db /tmp/eval.duckdb [--split tune] [--queries tests/data/evalset/queries.jsonl]

Each side ranks articles by their best passage (semantic and keyword search with per_doc, top
`--depth`), once per query; every fusion below is then computed from those two lists, so the
comparison costs one retrieval per side and query. Prints hit@1 per class and overall hit@1, hit@5
and MRR@10 for each method, best first, as a Markdown table for bench/RESULTS.md.

Methods:
- rrf w: weight/(60 + rank) summed over sides (semantic weight 1, keyword weight w);
- minmax a: a * semantic + (1 - a) * keyword, each min-max normalised over its side's candidates;
- tm a: as minmax, but normalised from the theoretical minimum (cosine -1, BM25 0) to the side's
  maximum (Bruch, Gai and Ingber, TOIS 2023, "TM2C2"); z a: z-scores instead;
- len a=s/l: minmax with the semantic weight chosen by query length (<= 3 words: s, else l);
- gap c: minmax, semantic weight 1 - c * the keyword side's margin (its best article's lead over
  the runner-up, relative to the best); len+gap: and at most s for short queries; floor f: at
  least f for longer ones;
- len+gap*cov s: semantic weight min(s if short else 1, 1 - margin * coverage), coverage being the
  share of the query's terms in the keyword winner's best passage: hybrid_search.sql's default;
- a document missing from one side scores 0 on it.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsindex.queries.evaluate import _labels_of, load_labelled  # noqa: E402
from newsindex.queries.search import _WORD, Filters, Matcher, _fold, search, word_count  # noqa: E402
from newsindex.queries.session import session  # noqa: E402

Side = dict[str, float]  # doc id -> that side's score for the document's best passage


def retrieve(db: str, labelled: list[dict], depth: int) -> list[dict]:
    rows = []
    with session(db) as con:
        labels = {d: _labels_of(p, d) for d, p in con.execute("SELECT doc_id, source_path FROM documents").fetchall()}
        for item in labelled:
            filters = Filters(since=item.get("since"), until=item.get("until"), source=item.get("source"))
            sides = {}
            for mode in ("semantic", "keyword"):
                hits = search(con, item["query"], k=depth, mode=mode, per_doc=True, filters=filters).hits
                sides[mode] = {h.doc_id: h.score for h in hits}
                if mode == "keyword":
                    sides["coverage"] = coverage(con, item["query"], hits[0].text) if hits else 0.0
            relevant = {d for d, names in labels.items() if names & set(item["relevant"])}
            rows.append({**item, **sides, "relevant_ids": relevant})
    return rows


def coverage(con, query: str, text: str) -> float:
    """Share of the query's terms (stems, stopwords left out) found in the passage."""
    matcher = Matcher(query, [text], con)
    if not matcher._targets:
        return 0.0
    found = {matcher._stems.get(w, w) for w in map(_fold, _WORD.findall(text))}
    return len(found & matcher._targets) / len(matcher._targets)


def _minmax(side: Side, low: float | None = None) -> Side:
    if not side:
        return {}
    top = max(side.values())
    bottom = min(side.values()) if low is None else low
    if top <= bottom:
        return {d: 1.0 for d in side}
    return {d: (s - bottom) / (top - bottom) for d, s in side.items()}


def convex(alpha: float, sem: Side, kw: Side, low: tuple[float | None, float | None] = (None, None)) -> Side:
    s, k = _minmax(sem, low[0]), _minmax(kw, low[1])
    return {d: alpha * s.get(d, 0.0) + (1 - alpha) * k.get(d, 0.0) for d in s.keys() | k.keys()}


def _z(side: Side) -> tuple[Side, float]:
    """z-scores over the side's candidates, and the z of the lowest candidate (for absent ones)."""
    if not side:
        return {}, 0.0
    values = list(side.values())
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 or 1.0
    return {d: (s - mean) / std for d, s in side.items()}, (min(values) - mean) / std


def zscore(alpha: float, sem: Side, kw: Side) -> Side:
    (s, s_low), (k, k_low) = _z(sem), _z(kw)
    return {d: alpha * s.get(d, s_low) + (1 - alpha) * k.get(d, k_low) for d in s.keys() | k.keys()}


def keyword_margin(kw: Side) -> float:
    """How far the keyword side's best article leads its runner-up, relative to the best (0..1)."""
    top = sorted(kw.values(), reverse=True)[:2]
    if not top or top[0] <= 0:
        return 0.0
    return 1.0 if len(top) == 1 else (top[0] - top[1]) / top[0]


def rrf(weight: float, sem: Side, kw: Side, c: int = 60) -> Side:
    fused: Side = {}
    for w, side in ((1.0, sem), (weight, kw)):
        for rank, d in enumerate(sorted(side, key=lambda d: (-side[d], d)), start=1):
            fused[d] = fused.get(d, 0.0) + w / (c + rank)
    return fused


def methods() -> dict[str, Callable[[dict], Side]]:
    found: dict[str, Callable[[dict], Side]] = {
        "semantic only": lambda r: r["semantic"],
        "keyword only": lambda r: r["keyword"],
    }
    for w in (0.25, 0.5, 1.0, 2.0):
        found[f"rrf w={w}"] = lambda r, w=w: rrf(w, r["semantic"], r["keyword"])
    for a in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        found[f"minmax a={a}"] = lambda r, a=a: convex(a, r["semantic"], r["keyword"])
        found[f"tm a={a}"] = lambda r, a=a: convex(a, r["semantic"], r["keyword"], (-1.0, 0.0))
    for a in (0.4, 0.5, 0.6, 0.7, 0.8):
        found[f"z a={a}"] = lambda r, a=a: zscore(a, r["semantic"], r["keyword"])
    for short, long in ((0.3, 0.5), (0.3, 0.6), (0.4, 0.6), (0.3, 0.7), (0.5, 0.7)):
        found[f"len z a={short}/{long}"] = lambda r, s=short, lg=long: zscore(s if word_count(r["query"]) <= 3 else lg, r["semantic"], r["keyword"])
    for c in (1.0, 1.5, 2.0):
        found[f"gap c={c}"] = lambda r, c=c: convex(max(0.0, 1 - c * keyword_margin(r["keyword"])), r["semantic"], r["keyword"])
        for short in (0.3, 0.5):
            found[f"len+gap {short}/c={c}"] = lambda r, c=c, s=short: convex(
                min(s if word_count(r["query"]) <= 3 else 1.0, max(0.0, 1 - c * keyword_margin(r["keyword"]))), r["semantic"], r["keyword"])
    for short in (0.3, 0.5):
        found[f"len+gap*cov {short}"] = lambda r, s=short: convex(
            min(s if word_count(r["query"]) <= 3 else 1.0, 1 - keyword_margin(r["keyword"]) * r["coverage"]), r["semantic"], r["keyword"])
        found[f"len+cov {short}"] = lambda r, s=short: convex(
            min(s if word_count(r["query"]) <= 3 else 1.0, 1 - r["coverage"]), r["semantic"], r["keyword"])
        found[f"len+min(gap,cov) {short}"] = lambda r, s=short: convex(
            min(s if word_count(r["query"]) <= 3 else 1.0, 1 - min(keyword_margin(r["keyword"]), r["coverage"])), r["semantic"], r["keyword"])
    for floor in (0.5, 0.6, 0.7, 0.8):
        found[f"len+gap floor={floor}"] = lambda r, f=floor: convex(
            min(0.3, 1 - keyword_margin(r["keyword"])) if word_count(r["query"]) <= 3 else max(f, 1 - keyword_margin(r["keyword"])),
            r["semantic"], r["keyword"])
    for short, long in ((0.3, 0.7), (0.3, 0.8), (0.3, 0.9), (0.5, 0.7), (0.5, 0.8), (0.5, 0.9), (0.3, 1.0)):
        found[f"len a={short}/{long}"] = lambda r, s=short, lg=long: convex(s if word_count(r["query"]) <= 3 else lg, r["semantic"], r["keyword"])
        found[f"len tm a={short}/{long}"] = lambda r, s=short, lg=long: convex(s if word_count(r["query"]) <= 3 else lg, r["semantic"], r["keyword"], (-1.0, 0.0))
    return found


def score(rows: list[dict], fuse: Callable[[dict], Side]) -> dict:
    per_class: dict[str, list[int | None]] = {}
    for row in rows:
        fused = fuse(row)
        ranking = sorted(fused, key=lambda d: (-fused[d], -row["semantic"].get(d, -2.0), d))
        first = next((i for i, d in enumerate(ranking[:10], start=1) if d in row["relevant_ids"]), None)
        per_class.setdefault(row["class"], []).append(first)
    everything = [r for ranks in per_class.values() for r in ranks]

    def hit(ranks, n):
        return sum(r is not None and r <= n for r in ranks) / len(ranks)

    return {
        "classes": {c: hit(ranks, 1) for c, ranks in sorted(per_class.items())},
        "hit@1": hit(everything, 1), "hit@5": hit(everything, 5),
        "mrr": sum(1 / r for r in everything if r) / len(everything),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--queries", default=str(Path(__file__).resolve().parent.parent / "tests/data/evalset/queries.jsonl"))
    parser.add_argument("--split", default="tune")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--cache", help="Pickle of the retrieved lists: read if it exists, else written (to try methods quickly).")
    args = parser.parse_args()
    if args.cache and Path(args.cache).exists():
        rows = pickle.loads(Path(args.cache).read_bytes())
    else:
        rows = retrieve(args.db, load_labelled(args.queries, args.split), args.depth)
        if args.cache:
            Path(args.cache).write_bytes(pickle.dumps(rows))
    results = {name: score(rows, fuse) for name, fuse in methods().items()}
    classes = sorted({r["class"] for r in rows})
    print(f"{len(rows)} queries, split {args.split}, depth {args.depth}\n")
    print("| method | " + " | ".join(f"{c} hit@1" for c in classes) + " | hit@1 | hit@5 | MRR@10 |")
    print("| --- " * (len(classes) + 4) + "|")
    for name, res in sorted(results.items(), key=lambda item: (-item[1]["hit@1"], -item[1]["mrr"])):
        cells = [f"{res['classes'][c]:.3f}" for c in classes] + [f"{res[k]:.3f}" for k in ("hit@1", "hit@5", "mrr")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Write the project's evaluation set: news-like articles and labelled queries, from vocab.py.

    python tests/data/evalset/generate.py        # rewrites articles/ and queries.jsonl beside this file

Deterministic (fixed seed): the same code always writes the same bytes. Every article is invented:
the places, people, companies and events come from the hand-written lists in vocab.py. Articles of
one topic share their templates and most of their words, and differ in two facets (what happened,
and what followed), so telling them apart takes the facets' meaning or their rare names.

Query classes (`class`):
- paraphrase: a question about one article's two facets, one or both in words the article does not use;
- entity: a short query of names (a person, a town and topic, a company, a case number), relevant
  to every article that mentions them;
- long: a fact from one section of the single long article;
- topical: a topic in a date window and/or one outlet (`since`, `until`, `source`), relevant to all
  the articles of that topic that pass the filters.
Each class is split alternately into `tune` and `heldout` halves (`split`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vocab  # noqa: E402

SEED = 12
RECAPS = [
    "What set this apart, {person_last} said, was that {f0}, and that {f1}.",
    "Two things stood out: {f0}, and {f1}.",
    "Reports from the scene confirmed that {f0}; they also confirmed that {f1}.",
]
SECTION_CODAS = [
    "Officials said the change would be reviewed after a year.",
    "The council's committee will report on the results in the spring.",
    "Residents can comment on the plans at the town hall.",
    "Figures for the next year will be published in the autumn.",
]
ARTICLES_PER_TOPIC = 30
PARAPHRASES_PER_TOPIC = 8


def _names(rng: random.Random, starts: list[str], ends: list[str], count: int) -> list[str]:
    pool = sorted({s + e for s in starts for e in ends})
    rng.shuffle(pool)
    return pool[:count]


def _people(rng: random.Random, count: int) -> list[str]:
    surnames = _names(rng, vocab.SURNAME_START, vocab.SURNAME_END, count)
    return [f"{rng.choice(vocab.FIRST)} {surname}" for surname in surnames]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _money(rng: random.Random) -> str:
    return f"{rng.randint(2, 950)} million {rng.choice(['crowns', 'euros', 'dollars'])}"


def build(rng: random.Random) -> tuple[list[dict], list[dict]]:
    cities = _names(rng, vocab.PLACE_START, vocab.PLACE_END, 110)
    regions = _names(rng, ["Val", "Ost", "Nor", "Kar", "Sel", "Dra", "Mor", "Tes", "Quar", "Hel"], ["doria", "mark", "land", "avia", "enia", "istan", "ovia"], 50)
    people = _people(rng, 260)
    companies = [f"{n} {rng.choice(vocab.COMPANY_KIND)}" for n in _names(rng, vocab.COMPANY_START, vocab.COMPANY_END, 40)]
    orgs = ["the regional council", "the national government", "the interior ministry", "a charity alliance", "the chamber of commerce", "the Red Cross"]
    start, days = dt.date(2023, 1, 1), (dt.date(2025, 6, 30) - dt.date(2023, 1, 1)).days

    articles: list[dict] = []
    queries: list[dict] = []
    used_paths: set[str] = set()
    for topic_name, topic in vocab.TOPICS.items():
        combos = [(a, b) for a in range(len(topic["facets"][0])) for b in range(len(topic["facets"][1]))]
        rng.shuffle(combos)
        topic_cities = rng.sample(cities, ARTICLES_PER_TOPIC)
        topic_regions = rng.sample(regions, ARTICLES_PER_TOPIC)
        topic_companies = rng.sample(companies, ARTICLES_PER_TOPIC)
        for i in range(ARTICLES_PER_TOPIC):
            f0, f1 = topic["facets"][0][combos[i][0]], topic["facets"][1][combos[i][1]]
            person, person2 = rng.sample(people, 2)
            date = start + dt.timedelta(days=rng.randrange(days))
            slots = {
                "city": topic_cities[i], "region": topic_regions[i], "person": person, "person2": person2,
                "person_last": person.split()[-1], "company": topic_companies[i], "org": rng.choice(orgs),
                "n": rng.randint(2, 9), "n2": f"{rng.randint(2, 90) * 100:,}", "pct": f"{rng.randint(15, 89) / 10:.1f}",
                "pct2": f"{rng.randint(10, 99) / 10:.1f}", "money": _money(rng), "code": f"KT-{rng.randint(1000, 9999)}",
                "day": date.strftime("%A"), "f0": f0[0], "f1": f1[0],
            }  # fmt: skip
            slots["org_cap"] = slots["org"][0].upper() + slots["org"][1:]
            slots["company_slug"], slots["region_slug"] = _slug(slots["company"]), _slug(slots["region"])
            lead = rng.choice(topic["lead"]).format(**slots)
            paras = [rng.choice(variants).format(**slots) for variants in topic["paras"]]
            # One paragraph restates what sets the article apart, as a report's second paragraph does.
            recap = rng.choice(RECAPS).format(**slots)
            middle = paras[1:4]
            rng.shuffle(middle)
            paras = [paras[0], recap, *middle[:2], paras[4]]
            paras[rng.randrange(len(paras))] += " " + rng.choice(vocab.COMMON).format(**slots)
            text = f"date {date.isoformat()} {lead}\n\n" + "\n\n".join(paras) + "\n"
            outlet = rng.choice(vocab.OUTLETS)
            stem = topic["slug"].format(**slots).lower()
            path = f"{outlet}/{stem}.txt"
            while path in used_paths:
                stem += "-2"
                path = f"{outlet}/{stem}.txt"
            used_paths.add(path)
            articles.append({"path": path, "stem": stem, "topic": topic_name, "date": date, "outlet": outlet,
                             "text": text, "slots": slots, "facets": (f0, f1)})  # fmt: skip
        for article in [a for a in articles if a["topic"] == topic_name][:PARAPHRASES_PER_TOPIC]:
            # A third of the questions paraphrase both facets; the rest keep one facet in the article's
            # words, as a reader who remembers one detail verbatim would, so neither side wins alone.
            (a0, q0), (a1, q1) = article["facets"]
            kept = rng.randrange(3)
            q0, q1 = (a0 if kept == 1 else q0), (a1 if kept == 2 else q1)
            question = rng.choice(topic["questions"]).format(q0=q0, q1=q1)
            queries.append({"query": question[0].upper() + question[1:], "relevant": [article["stem"]], "class": "paraphrase"})

    long_date = dt.date(2022, 12, 30)  # before every topical window, so it never belongs to one
    sections = "\n\n".join(f"## {heading}\n\n{body} {rng.choice(SECTION_CODAS)}" for heading, body, _ in vocab.LONG_SECTIONS)
    long_text = (f"date {long_date.isoformat()} Brennholm's council published its review of the year, a long report on what the "
                 f"town changed, section by section.\n\n{sections}\n")  # fmt: skip
    articles.append({"path": f"capital-wire/{vocab.LONG_TITLE}.txt", "stem": vocab.LONG_TITLE, "topic": "long",
                     "date": long_date, "outlet": "capital-wire", "text": long_text, "slots": {}, "facets": ()})  # fmt: skip
    for _, _, question in vocab.LONG_SECTIONS:
        queries.append({"query": question[0].upper() + question[1:], "relevant": [vocab.LONG_TITLE], "class": "long"})

    queries += _entity_queries(rng, articles, people, companies)
    queries += _topical_queries(rng, articles)
    return articles, _split(queries)


def _mentioning(articles: list[dict], name: str) -> list[str]:
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    return [a["stem"] for a in articles if pattern.search(a["text"])]


def _entity_queries(rng: random.Random, articles: list[dict], people: list[str], companies: list[str]) -> list[dict]:
    found = []
    named = [p for p in people if _mentioning(articles, p)]
    for person in rng.sample(named, 20):
        found.append({"query": person, "relevant": _mentioning(articles, person), "class": "entity"})
    topic_words = {"flood": "flood", "election": "mayor vote", "football": "Rovers", "trial": "court", "science": "university study",
                   "wildfire": "wildfire", "strike": "strike", "transport": "train derailment"}  # fmt: skip
    for article in rng.sample([a for a in articles if a["topic"] in topic_words], 15):
        city = article["slots"]["city"]
        relevant = [a["stem"] for a in articles if a["topic"] == article["topic"] and a["slots"].get("city") == city]
        found.append({"query": f"{city} {topic_words[article['topic']]}", "relevant": relevant, "class": "entity"})
    for article in rng.sample([a for a in articles if a["topic"] == "earnings"], 8):
        found.append({"query": article["slots"]["company"], "relevant": _mentioning(articles, article["slots"]["company"]), "class": "entity"})
    for article in rng.sample([a for a in articles if a["topic"] == "trial" and a["slots"]["code"] in a["text"]], 7):
        code = article["slots"]["code"]
        found.append({"query": f"case {code}", "relevant": _mentioning(articles, code), "class": "entity"})
    return found


def _topical_queries(rng: random.Random, articles: list[dict]) -> list[dict]:
    found = []
    while len(found) < 25:
        topic = rng.choice(list(vocab.TOPICS))
        query = {"query": vocab.TOPICS[topic]["topical"], "class": "topical"}
        kind = rng.choice(["window", "window", "source", "both"])
        if kind in ("window", "both"):
            since = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(800))
            query["since"] = since.isoformat()
            query["until"] = (since + dt.timedelta(days=rng.choice([90, 150, 240]) * (2 if kind == "both" else 1))).isoformat()
        if kind in ("source", "both"):
            query["source"] = f"{rng.choice(vocab.OUTLETS)}/*"
        relevant = [
            a["stem"] for a in articles if a["topic"] == topic
            and ("since" not in query or query["since"] <= a["date"].isoformat() <= query["until"])
            and ("source" not in query or a["outlet"] == query["source"][:-2])
        ]  # fmt: skip
        if 1 <= len(relevant) <= 8 and not any(q["query"] == query["query"] and q.get("since") == query.get("since") for q in found):
            found.append({**query, "relevant": relevant})
    return found


def _split(queries: list[dict]) -> list[dict]:
    seen: dict[str, int] = {}
    for query in queries:
        n = seen.get(query["class"], 0)
        query["split"] = "tune" if n % 2 == 0 else "heldout"
        seen[query["class"]] = n + 1
    return queries


def _overlap(question: str, text: str) -> float:
    """Share of a question's content words (5-letter prefixes) that also occur in the article."""
    words = lambda s: {w[:5] for w in re.findall(r"[a-z]+", s.lower()) if len(w) > 3}  # noqa: E731
    asked = words(question) - {"which", "where", "there", "after", "about", "also", "that", "then", "what", "while"}
    return len(asked & words(text)) / max(1, len(asked))


def main() -> None:
    articles, queries = build(random.Random(SEED))
    out = HERE / "articles"
    for old in sorted(out.rglob("*.txt")):
        old.unlink()
    for article in articles:
        path = out / article["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(article["text"], encoding="utf-8")
    with open(HERE / "queries.jsonl", "w", encoding="utf-8") as f:
        for query in queries:
            f.write(json.dumps(query, ensure_ascii=False) + "\n")
    texts = {a["stem"]: a["text"] for a in articles}
    paraphrases = [q for q in queries if q["class"] == "paraphrase"]
    shared = sum(_overlap(q["query"], texts[q["relevant"][0]]) for q in paraphrases) / len(paraphrases)
    counts = {c: sum(q["class"] == c for q in queries) for c in ("paraphrase", "entity", "long", "topical")}
    print(f"{len(articles)} articles, {len(queries)} queries {counts}; paraphrases share {shared:.0%} of content words with their article")


if __name__ == "__main__":
    main()

"""A deterministic generator of news-like articles for the ingest benchmark.

Articles are built from sentence templates filled with names, places, organisations, numbers and
dates drawn from a seeded `random.Random`, so the same seed always gives byte-identical files while
the vocabulary varies enough that token counts and chunk lengths look like real news.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path

FIRST = (
    "Amara Liam Sofia Mateo Yuki Omar Priya Lukas Chloe Tomasz Ingrid Kwame Elena Rafael Mei Jonas "
    "Fatima Diego Hannah Arjun Zofia Malik Leila Sven Noor Carlos Aiko Pieter Grace Emeka Ana Viktor"
).split()
LAST = (
    "Okafor Lindqvist Moreau Tanaka Haddad Kowalski Fernandes Novak Brennan Castillo Mensah Petrov "
    "Schneider Nakamura Alvarez Osei Dubois Larsen Rahman Costa Yilmaz Gallagher Ivanova Mbeki Rossi"
).split()
PLACES = (
    "Lisbon|Nairobi|Osaka|Rotterdam|Valparaíso|Tbilisi|Winnipeg|Accra|Gdańsk|Cebu|Tromsø|Mombasa|"
    "Porto Alegre|Chiang Mai|Aberdeen|Dhaka|Córdoba|Tallinn|Hobart|Marrakesh|Bergen|Kaunas|Surabaya"
).split("|")
ORGS = (
    "the Ministry of Health|the city council|the central bank|the port authority|the national rail operator|"
    "the electoral commission|the meteorological office|the teachers' union|the regional court|"
    "the energy regulator|the coast guard|the university hospital|the football federation|"
    "the chamber of commerce|the water utility|the competition authority|the fire service"
).split("|")
TOPICS = {
    "flood": ("river levels", "evacuation centres", "sandbags", "rainfall", "embankments", "relief supplies"),
    "election": ("ballots", "turnout", "the recount", "polling stations", "campaign finance", "the runoff"),
    "economy": ("inflation", "interest rates", "exports", "the budget deficit", "wages", "bond yields"),
    "health": ("vaccination rates", "waiting lists", "the outbreak", "hospital beds", "nurses", "clinical trials"),
    "transport": ("the metro extension", "ticket prices", "signal failures", "the new tram line", "freight traffic", "delays"),
    "energy": ("the wind farm", "gas prices", "grid capacity", "solar panels", "power cuts", "the pipeline"),
    "crime": ("the investigation", "witnesses", "the stolen artefacts", "the suspects", "forensic evidence", "the trial"),
    "sport": ("the transfer fee", "the league table", "the stadium", "the coach", "injury reports", "the final"),
    "climate": ("the drought", "crop yields", "heatwaves", "emissions targets", "wildfires", "glacier melt"),
    "technology": ("the chip factory", "data centres", "the software update", "cyber attacks", "semiconductors", "broadband"),
}
VERBS = (
    "announced", "criticised", "defended", "postponed", "approved", "questioned", "welcomed", "rejected",
    "investigated", "confirmed", "denied", "expanded", "suspended", "reviewed", "funded", "warned about",
)
ADJECTIVES = (
    "unexpected", "long-awaited", "controversial", "modest", "sweeping", "temporary", "record", "costly",
    "preliminary", "fragile", "unprecedented", "gradual", "sharp", "widespread", "local", "cautious",
)
TEMPLATES = (
    "{name}, a spokesperson for {org}, said on {weekday} that {thing} had become the most pressing issue in {place}.",
    "Officials in {place} {verb} a {adj} plan on {thing}, which is expected to cost about {money}.",
    "\"We have never seen anything like this,\" said {name}, who has lived in {place} for {n} years.",
    "According to figures published by {org} on {date}, {thing} rose by {pct} percent compared with last year.",
    "{org_cap} {verb} the proposal after {n} hours of debate, citing concerns about {thing2}.",
    "Critics, including {name} of {org}, argued that the {adj} measures would do little to address {thing}.",
    "The decision follows {n} weeks of talks between {org} and representatives from {place} and {place2}.",
    "By {weekday} evening, {n2} people had signed a petition calling for an inquiry into {thing}.",
    "Analysts expect {thing} to remain a {adj} concern well into {year}, according to a report by {org}.",
    "In a statement, {name} described the situation in {place} as {adj} but said {thing2} was improving.",
    "The last comparable episode, in {year0}, led to {adj} changes in how {org} handled {thing}.",
    "Residents of {place} told reporters that {thing} and {thing2} had dominated conversations for weeks.",
    "{name} and {name2} are expected to testify before a parliamentary committee on {date}.",
    "A survey of {n2} households found that {pct} percent considered {thing} their main worry.",
    "Mr. {last} declined to comment on whether {org} had been warned about {thing2} in advance.",
    "Dr. {last}, who leads the research team, said the data on {thing} were still preliminary.",
    "The U.S. embassy in {place} issued a short statement, and the U.N. said it was monitoring {thing}.",
    "Funding of {money} was {verb} for {thing2}, though details of the schedule were not released.",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def _fill(self, template: str, topic: str, published: dt.date) -> str:
        r = self.rng
        things = TOPICS[topic]
        org = r.choice(ORGS)
        values = {
            "name": f"{r.choice(FIRST)} {r.choice(LAST)}",
            "name2": f"{r.choice(FIRST)} {r.choice(LAST)}",
            "last": r.choice(LAST),
            "org": org,
            "org_cap": org[0].upper() + org[1:],
            "place": r.choice(PLACES),
            "place2": r.choice(PLACES),
            "thing": r.choice(things),
            "thing2": r.choice(things),
            "verb": r.choice(VERBS),
            "adj": r.choice(ADJECTIVES),
            "weekday": r.choice(WEEKDAYS),
            "n": r.randint(2, 60),
            "n2": f"{r.randint(1_000, 250_000):,}",
            "pct": f"{r.uniform(0.5, 45):.1f}",
            "money": f"{r.choice(('€', '$', '£'))}{r.randint(2, 900)} million",
            "date": (published + dt.timedelta(days=r.randint(1, 90))).strftime("%B %-d"),
            "year": published.year + 1,
            "year0": published.year - r.randint(3, 30),
        }
        return template.format(**values)

    def article(self, index: int, tokens: int = 800) -> tuple[str, dt.date, str]:
        """(title, date, text) of about `tokens` WordPiece tokens (~0.64 words a token here)."""
        r = self.rng
        topic = r.choice(sorted(TOPICS))
        published = dt.date(2019, 1, 1) + dt.timedelta(days=r.randint(0, 6 * 365))
        place = r.choice(PLACES)
        title = f"{place}: {r.choice(ADJECTIVES)} {topic} news {index}"
        paragraphs: list[str] = []
        words = 0
        target_words = int(tokens * 0.64)
        while words < target_words:
            sentences = [self._fill(r.choice(TEMPLATES), topic, published) for _ in range(r.randint(2, 5))]
            paragraph = " ".join(sentences)
            paragraphs.append(paragraph)
            words += len(paragraph.split())
        return title, published, "\n\n".join(paragraphs)


def write_text_corpus(folder: Path, articles: int, seed: int = 7, tokens: int = 800) -> list[Path]:
    """`articles` .txt files (`date YYYY-MM-DD` header), 100 to a sub-folder; reused if complete."""
    marker = folder / f".complete-{articles}-{seed}-{tokens}"
    gen = Generator(seed)
    files = [folder / f"{i // 100:04d}" / f"article-{i:06d}.txt" for i in range(articles)]
    if marker.exists():
        return files
    for i, path in enumerate(files):
        _, published, text = gen.article(i, tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"date {published.isoformat()} {text}\n", encoding="utf-8")
    marker.touch()
    return files


def jsonl_lines(seed: int, tokens: int = 800) -> Iterator[str]:
    gen = Generator(seed)
    index = 0
    while True:
        title, published, text = gen.article(index, tokens)
        yield json.dumps({"id": f"gen-{seed}-{index}", "title": title, "date": published.isoformat(), "text": text})
        index += 1


def write_jsonl_corpus(folder: Path, total_bytes: int, file_bytes: int = 4 << 20, seed: int = 11) -> list[Path]:
    """JSON Lines files of about `file_bytes` each until `total_bytes` are written; reused if complete."""
    marker = folder / f".complete-{total_bytes}-{file_bytes}-{seed}"
    if marker.exists():
        return sorted(folder.glob("*.jsonl"))
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    lines = jsonl_lines(seed)
    written = 0
    while written < total_bytes:
        path = folder / f"feed-{len(files):05d}.jsonl"
        size = 0
        with path.open("w", encoding="utf-8") as out:
            while size < file_bytes and written + size < total_bytes:
                line = next(lines) + "\n"
                out.write(line)
                size += len(line.encode("utf-8"))
        written += size
        files.append(path)
    marker.touch()
    return files

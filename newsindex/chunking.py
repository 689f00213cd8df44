"""Cutting article text into chunks of whole sentences that fit the embedding model.

Tokens are counted with the model's own tokenizer (the `tokenizers` library, no torch), so a chunk
never exceeds the model's max_seq_length once [CLS] and [SEP] are added: nothing is silently
truncated by the encoder. Every chunk keeps its character span, so `text[start:end]` is the chunk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from newsindex.config import ChunkSettings

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "gov", "sen", "rep", "lt", "col",
    "capt", "sgt", "maj", "adm", "rev", "hon", "pres", "inc", "ltd", "co", "corp", "bros", "vs", "etc",
    "no", "nos", "vol", "fig", "approx", "est", "dept", "univ", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "u.s", "u.k", "u.n", "a.m", "p.m",
}  # fmt: skip
# Sentence end: terminal punctuation, optional closing quotes/brackets, then white space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_STARTS_SENTENCE = re.compile(r"\s+[\"'“‘(\[]*[A-Z0-9\u00C0-\u024F\u0370-\u1FFF\u0400-\u04FF\u0590-\u06FF\u3040-\u9FFF]")
# The model's WordPiece vocabulary turns any word over 100 characters into one [UNK]; a run of
# thousands of characters without white space (a base64 blob, a pasted hash dump) is not prose and
# would fill chunks with [UNK] or with thousands of meaningless word pieces. Such runs stay in the
# stored text but are left out of every chunk. The lookbehind makes the scan linear.
MAX_WORD_CHARS = 1000
_LONG_RUN = re.compile(r"(?<!\S)\S{%d,}" % (MAX_WORD_CHARS + 1))
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|>))")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    start: int
    end: int
    text: str
    token_count: int
    # The content token ids (no special tokens) the count came from, handed to the encoder so it
    # never tokenizes the same text again; None where the chunker did not keep them.
    token_ids: list[int] | None = field(default=None, compare=False, repr=False)


class Tokenizer:
    """The model's fast tokenizer with its limits; counts content tokens (no special tokens)."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_seq_length = _max_seq_length(model_dir)
        self.special_tokens = self._tok.post_processor.num_special_tokens_to_add(False) if self._tok.post_processor else 0
        # The ids the model puts around content ([CLS] ... [SEP] for BERT), found from one probe so
        # any post-processor template works without knowing its token names.
        bare = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        at = next((i for i in range(len(full)) if full[i : i + len(bare)] == bare), 0)
        self.prefix, self.suffix = full[:at], full[at + len(bare) :]
        padding = self._tok.token_to_id("[PAD]")
        self.pad_id = padding if padding is not None else 0

    @property
    def content_budget(self) -> int:
        return self.max_seq_length - self.special_tokens

    def encode(self, texts: list[str]):
        return self._tok.encode_batch(texts, add_special_tokens=False)

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Content token ids of each text (no special tokens, no truncation)."""
        # The fast variant skips character offsets, which ids do not need.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def count(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.ids(texts)]

    def model_input(self, content_ids: list[int]) -> list[int]:
        """What the model reads for these content ids: special tokens added, cut to max_seq_length
        the way the model's own tokenizer truncates."""
        return [*self.prefix, *content_ids[: self.content_budget], *self.suffix]

    def count_with_special(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=True).ids)


def _max_seq_length(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return 512


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: str) -> Tokenizer:
    return Tokenizer(Path(model_dir))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences in `text`, white space trimmed, in order, covering every
    non-space character exactly once. Paragraphs, headings and list items always end a sentence."""
    spans: list[tuple[int, int]] = []
    block_start = 0
    for brk in [*_BLOCK_BREAK.finditer(text), None]:
        block_end = brk.start() if brk else len(text)
        _split_block(text, block_start, block_end, spans)
        if brk:
            block_start = brk.end()
    return spans


def _split_block(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    sentence_start = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if not _STARTS_SENTENCE.match(text, match.end(), end):
            continue
        if _is_abbreviation(text, sentence_start, match.start(), match.group()):
            continue
        _add_span(text, sentence_start, match.end(), spans)
        sentence_start = match.end()
    _add_span(text, sentence_start, end, spans)


def _is_abbreviation(text: str, sentence_start: int, dot: int, punct: str) -> bool:
    if not punct.startswith(".") or len(punct.rstrip("\"'”’)]")) > 1:
        return False
    word = text[sentence_start:dot].rsplit(None, 1)[-1] if text[sentence_start:dot].strip() else ""
    word = word.lstrip("\"'“‘([").lower()
    # Single letters are initials ("J. Smith"); dotted words are acronyms ("U.S.").
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        spans.append((start, end))


def long_runs(text: str) -> list[tuple[int, int]]:
    """Character spans of the runs of more than MAX_WORD_CHARS characters without white space."""
    return [m.span() for m in _LONG_RUN.finditer(text)]


def chunk_text(text: str, tokenizer: Tokenizer, settings: ChunkSettings = ChunkSettings()) -> list[Chunk]:
    """Pack whole sentences into chunks of at most `settings.max_tokens` content tokens, repeating
    the last `overlap_sentences` sentences of a chunk at the start of the next. A sentence longer
    than the budget is cut at token boundaries (word boundaries where possible). Runs longer than
    MAX_WORD_CHARS without white space are left out: the text around them is chunked apart."""
    budget = min(settings.max_tokens, tokenizer.content_budget)
    if budget < 1:
        raise ValueError(f"chunk budget must be at least 1 token, got {settings.max_tokens}")
    runs = long_runs(text)
    if not runs:
        return _chunk_prose(text, tokenizer, settings, budget)
    chunks: list[Chunk] = []
    bounds = [0] + [edge for run in runs for edge in run] + [len(text)]
    for start, end in zip(bounds[::2], bounds[1::2]):
        for c in _chunk_prose(text[start:end], tokenizer, settings, budget):
            chunks.append(Chunk(len(chunks), start + c.start, start + c.end, c.text, c.token_count))
    return chunks


def _chunk_prose(text: str, tokenizer: Tokenizer, settings: ChunkSettings, budget: int) -> list[Chunk]:
    units = _units(text, split_sentences(text), tokenizer, budget)
    spans = _pack(units, settings.overlap_sentences, budget)
    # Token counts of sentences add up for WordPiece, but check the joined texts to be sure: all in
    # one tokenizer call (a call per chunk doubled the cost of chunking), and chunk by chunk only if
    # some joined text is over the budget after all.
    ids = tokenizer.ids([text[start:end] for start, end, _ in spans])
    if max(map(len, ids), default=0) > budget:
        return _chunk_exact(text, units, tokenizer, settings.overlap_sentences, budget)
    return [Chunk(n, start, end, text[start:end], len(i), i) for n, ((start, end, _), i) in enumerate(zip(spans, ids))]


def _pack(units: list[tuple[int, int, int]], overlap: int, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, summed unit tokens) of each chunk, packing whole units greedily."""
    spans: list[tuple[int, int, int]] = []
    i = 0
    while i < len(units):
        j, tokens = _fill(units, i, budget)
        spans.append((units[i][0], units[j - 1][1], tokens))
        if j >= len(units):
            break
        i = _next_start(units, i, j, overlap, budget)
    return spans


def _chunk_exact(text: str, units: list[tuple[int, int, int]], tokenizer: Tokenizer, overlap: int, budget: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j, _ = _fill(units, i, budget)
        start, end = units[i][0], units[j - 1][1]
        chunk_tokens = tokenizer.count([text[start:end]])[0]
        while chunk_tokens > budget and j - 1 > i:
            j -= 1
            end = units[j - 1][1]
            chunk_tokens = tokenizer.count([text[start:end]])[0]
        chunks.append(Chunk(len(chunks), start, end, text[start:end], chunk_tokens))
        if j >= len(units):
            break
        i = _next_start(units, i, j, overlap, budget)
    return chunks


def _fill(units: list[tuple[int, int, int]], i: int, budget: int) -> tuple[int, int]:
    """End (exclusive) and summed tokens of the chunk starting at unit i: whole units while they
    fit, and always at least one."""
    j, tokens = i, 0
    while j < len(units) and (j == i or tokens + units[j][2] <= budget):
        tokens += units[j][2]
        j += 1
    return j, tokens


def _next_start(units: list[tuple[int, int, int]], i: int, j: int, overlap: int, budget: int) -> int:
    """Where the next chunk starts: back `overlap` units, but never so far that the next unit no
    longer fits (a chunk must always add something new)."""
    start = max(j - overlap, i + 1)
    while start < j and sum(u[2] for u in units[start : j + 1]) > budget:
        start += 1
    return start


def _units(text: str, spans: list[tuple[int, int]], tokenizer: Tokenizer, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) for each sentence, with over-long sentences cut into pieces."""
    units: list[tuple[int, int, int]] = []
    encodings = tokenizer.encode([text[s:e] for s, e in spans])
    for (start, end), enc in zip(spans, encodings):
        if len(enc.ids) <= budget:
            units.append((start, end, len(enc.ids)))
        else:
            units.extend(_cut_long(text, start, enc, tokenizer, budget))
    return units


def _cut_long(text: str, base: int, enc, tokenizer: Tokenizer, budget: int) -> list[tuple[int, int, int]]:
    offsets = enc.offsets
    sentence = text[base : base + offsets[-1][1]]
    pieces: list[tuple[int, int, int]] = []
    first = 0
    while first < len(offsets):
        last = min(first + budget, len(offsets))
        if last < len(offsets):
            # Prefer to cut where a new word starts, so the piece re-tokenizes the same way.
            cut = last
            while cut > first + 1 and offsets[cut][0] == offsets[cut - 1][1]:
                cut -= 1
            last = cut if cut > first + 1 else last
        while True:
            start = offsets[first][0]
            end = offsets[last][0] if last < len(offsets) else offsets[-1][1]
            piece = sentence[start:end].rstrip()
            count = tokenizer.count([piece])[0]
            if count <= budget or last - first <= 1:
                break
            last -= 1
        lstrip = len(piece) - len(piece.lstrip())
        pieces.append((base + start + lstrip, base + start + len(piece), count))
        first = last
    return pieces

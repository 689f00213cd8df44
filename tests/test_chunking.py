"""Chunk invariants, checked with the real model's tokenizer."""

from __future__ import annotations

import random

import pytest
from conftest import SEED_FILE

from newsindex.articles import read_articles
from newsindex.chunking import chunk_text, long_runs, split_sentences
from newsindex.config import ChunkSettings

SEED_TEXT = next(read_articles(SEED_FILE)).text


def sentence_covered(text, span, chunks) -> bool:
    return any(c.start <= span[0] and span[1] <= c.end for c in chunks)


def check_invariants(text, chunks, tokenizer, settings):
    assert chunks, "a non-empty text gives at least one chunk"
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.token_count == tokenizer.count([chunk.text])[0]
        assert chunk.token_count <= settings.max_tokens
        assert tokenizer.count_with_special(chunk.text) <= tokenizer.max_seq_length
    # Every non-space character is in some chunk, but for runs too long to be words, which are in
    # none; and chunks move forward.
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    for start, end in long_runs(text):
        assert not any(covered[start:end])
        covered[start:end] = [True] * (end - start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    assert all(a.start < b.start and a.end < b.end for a, b in zip(chunks, chunks[1:]))


def test_sentences_of_the_seed():
    spans = split_sentences(SEED_TEXT)
    sentences = [SEED_TEXT[s:e] for s, e in spans]
    assert sentences[0].startswith("Two weeks before") and sentences[0].endswith("as provocation.")
    # "U.S." and "Mr." do not end sentences.
    assert any(s.startswith("On March 7 the U.S. Embassy in Moscow published") and s.endswith("including concerts.") for s in sentences)
    assert any(s.startswith("On March 19, speaking to the board of the FSB, Mr. Putin described") for s in sentences)
    assert "It told American citizens to avoid crowds over the following 48 hours." in sentences
    assert len(sentences) == 20
    assert sentences[-1].endswith("government that is not trusted.")


def test_sentences_cover_text_exactly():
    text = 'He said "Go." Then left!  New para?\n\nYes. Dr. Who met J. Smith at 3 p.m. Monday.\n# Heading\n- item one\n- item two'
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == [
        'He said "Go."', "Then left!", "New para?", "Yes.", "Dr. Who met J. Smith at 3 p.m. Monday.",
        "# Heading", "- item one", "- item two",
    ]


@pytest.mark.parametrize("settings", [ChunkSettings(), ChunkSettings(40, 0), ChunkSettings(40, 2), ChunkSettings(254, 1), ChunkSettings(8, 3)])
def test_seed_chunk_invariants(tokenizer, settings):
    chunks = chunk_text(SEED_TEXT, tokenizer, settings)
    check_invariants(SEED_TEXT, chunks, tokenizer, settings)
    # Whole sentences: every sentence that fits the budget sits inside one chunk; longer ones are cut.
    for start, end in split_sentences(SEED_TEXT):
        if tokenizer.count([SEED_TEXT[start:end]])[0] <= settings.max_tokens:
            assert sentence_covered(SEED_TEXT, (start, end), chunks)
        else:
            assert not sentence_covered(SEED_TEXT, (start, end), chunks)


def test_overlap_repeats_sentences(tokenizer):
    chunks = chunk_text(SEED_TEXT, tokenizer, ChunkSettings(60, 1))
    sentences = split_sentences(SEED_TEXT)
    overlapping = 0
    for a, b in zip(chunks, chunks[1:]):
        if b.start < a.end:
            overlapping += 1
            last = max(s for s in sentences if s[1] <= a.end)
            assert b.start == last[0], "the repeated part is exactly the previous chunk's last sentence"
        else:
            # Overlap is dropped only when the last sentence and the next one do not fit together.
            last = max(s for s in sentences if s[1] <= a.end)
            first_new = min(s for s in sentences if s[0] >= b.start)
            assert tokenizer.count([SEED_TEXT[last[0] : first_new[1]]])[0] > 60
    assert overlapping >= len(chunks) // 2
    plain = chunk_text(SEED_TEXT, tokenizer, ChunkSettings(60, 0))
    for a, b in zip(plain, plain[1:]):
        assert b.start >= a.end


def test_budget_is_capped_by_the_model(tokenizer):
    settings = ChunkSettings(10_000, 0)
    chunks = chunk_text(SEED_TEXT * 3, tokenizer, settings)
    assert max(c.token_count for c in chunks) <= tokenizer.max_seq_length - 2
    assert all(tokenizer.count_with_special(c.text) <= tokenizer.max_seq_length for c in chunks)


def test_long_sentence_is_split_on_token_boundaries(tokenizer):
    text = "Intro sentence. " + " ".join(f"word{i} and more" for i in range(400)) + ". Outro sentence."
    settings = ChunkSettings(50, 1)
    chunks = chunk_text(text, tokenizer, settings)
    check_invariants(text, chunks, tokenizer, settings)
    assert len(chunks) > 10


def test_one_huge_word_and_odd_text(tokenizer):
    text = "x" * 5000 + " end. " + "Ünïcödé ✓ مرحبا بالعالم 👋🏽 " * 20
    settings = ChunkSettings(32, 1)
    chunks = chunk_text(text, tokenizer, settings)
    check_invariants(text, chunks, tokenizer, settings)
    assert chunks[0].text.startswith("end.")
    # A word of up to 1000 characters is still chunked (as pieces the tokenizer makes of it).
    word = "y" * 1000 + " end."
    assert chunk_text(word, tokenizer, settings)[0].start == 0


def test_random_texts_keep_invariants(tokenizer):
    rng = random.Random(7)
    words = ["the", "minister", "said", "Moscow", "U.S.", "warning", "Dr.", "concert", "attack", "42", "(quoted)", '"Yes."']
    for _ in range(25):
        parts = []
        for _ in range(rng.randint(1, 40)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
            parts.append(sentence.capitalize() + rng.choice([".", "!", "?", ""]) + rng.choice([" ", "\n\n", "\n"]))
        text = "".join(parts).strip() or "x"
        settings = ChunkSettings(rng.choice([16, 32, 128]), rng.choice([0, 1, 2]))
        check_invariants(text, chunk_text(text, tokenizer, settings), tokenizer, settings)

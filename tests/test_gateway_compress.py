"""Tokenizer, extractive compressor and chat compression, on real prose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.gateway.compress import (
    MESSAGE_OVERHEAD_TOKENS,
    chat_tokens,
    compress,
    compress_messages,
    segment,
)
from fleetopt_milp.gateway.corpus import prose_documents
from fleetopt_milp.gateway.fidelity import head_tail, lcs_length, rouge_l_recall, term_coverage
from fleetopt_milp.gateway.tokenizer import BpeTokenizer, Tokenizer, load_tokenizer

TOK = load_tokenizer()
DOCS = prose_documents()
needs_docs = pytest.mark.skipif(not DOCS, reason="Debian licence texts not on this machine")


def _units(text: str) -> list[str]:
    s = segment(text).tolist() + [len(text)]
    return [text[a:b] for a, b in zip(s, s[1:])]


def test_shipped_tokenizer_is_gpt2_bpe():
    assert isinstance(TOK, BpeTokenizer) and isinstance(TOK, Tokenizer)
    # GPT-2's published encoding of a fixed sentence (ids from its 50,257-token vocabulary).
    assert TOK.encode("Hello world") == [15496, 995]
    text = "Budgets are counted in tokens, never characters. Ünïcödé too!"
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.count(text) == len(TOK.encode(text))
    assert TOK.token_bytes.shape == (50257,)
    assert load_tokenizer("gpt2") is TOK  # loaded once


def test_unknown_tokenizer_is_a_one_line_error():
    with pytest.raises(FleetOptError, match="not a shipped tokenizer"):
        load_tokenizer("no-such-tokenizer")


@needs_docs
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.integers(0, 100), start=st.integers(0, 30000), size=st.integers(200, 12000),
       cut=st.lists(st.integers(0, 10**6), max_size=6))
def test_units_are_additive_under_the_gpt2_pretokenizer(doc, start, size, cut):
    """count(concat of any subsequence of units) == sum of their counts."""
    text = DOCS[doc % len(DOCS)][1][start:start + size]
    units = _units(text)
    assert "".join(units) == text
    for u in units[:-1]:
        assert not u[-1].isspace()
    for u in units[1:]:
        assert u[0].isspace()
    keep = sorted({c % len(units) for c in cut}) or [0]
    assert TOK.count("".join(units[i] for i in keep)) == sum(TOK.count(units[i]) for i in keep)


@needs_docs
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.integers(0, 100), start=st.integers(0, 30000), size=st.integers(50, 30000),
       share=st.floats(0.0, 1.2))
def test_budget_guarantee_and_subsequence(doc, start, size, share):
    text = DOCS[doc % len(DOCS)][1][start:start + size]
    n = TOK.count(text)
    budget = int(share * n)
    res = compress(text, budget, TOK)
    assert res.tokens_before == n
    assert res.tokens_after == TOK.count(res.text) <= budget
    units = _units(text)
    assert res.n_units == len(units)
    assert list(res.kept) == sorted(set(res.kept))
    assert res.text == "".join(units[i] for i in res.kept)  # a subsequence of whole units
    if n <= budget:
        assert res.text == text and not res.changed
    if res.kept_closing:
        last = max(i for i, u in enumerate(units) if u.strip() or i == 0)
        assert last in res.kept


@needs_docs
def test_keeps_opening_and_closing_question_and_is_deterministic():
    text = max((t for _, t in DOCS), key=len)[:20000] + "\n\nGiven the text above, who may distribute copies? Answer briefly."
    n = TOK.count(text)
    a = compress(text, n // 2, TOK)
    b = compress(text, n // 2, TOK)
    assert a == b
    assert a.kept_opening and a.kept_closing and a.changed
    assert a.text.startswith(_units(text)[0])
    assert a.text.endswith("who may distribute copies? Answer briefly.")
    # The budget is used: no unit left out would still fit.
    units = _units(text)
    left = [TOK.count(units[i]) for i in range(len(units)) if i not in a.kept]
    assert min(left) > a.budget_tokens - a.tokens_after


def test_budget_edge_cases():
    assert compress("", 0, TOK).text == ""
    one = "A single sentence that will not fit."
    res = compress(one, 3, TOK)
    assert res.text == "" and res.tokens_after == 0 and not res.kept_closing
    with pytest.raises(FleetOptError, match="budget_tokens"):
        compress(one, -1, TOK)


def test_segment_keeps_abbreviations_and_wrapped_lines_inside_sentences():
    text = ("See e.g. the notes by Dr. Smith on page 3. The next sentence\nis wrapped across "
            "lines. Third one!\n\n- an item\n- another item\n\nLast paragraph?")
    units = _units(text)
    assert units == ["See e.g. the notes by Dr. Smith on page 3.",
                     " The next sentence\nis wrapped across lines.", " Third one!",
                     "\n\n- an item", "\n- another item", "\n\nLast paragraph?"]


def test_a_non_additive_tokenizer_is_recounted(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    if not DOCS:
        pytest.skip("Debian licence texts not on this machine")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"])
    hf.train_from_iterator(DOCS[0][1].splitlines(), trainer)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(str(path))
    assert not getattr(tok, "additive", False)
    text = DOCS[1][1][:15000]
    n = tok.count(text)
    assert n == len(tok.encode(text)) > 0
    for share in (0.3, 0.6, 0.9):
        res = compress(text, int(share * n), tok)
        assert tok.count(res.text) == res.tokens_after <= int(share * n)
        assert res.text == "".join(_units(text)[i] for i in res.kept)


@needs_docs
def test_chat_cuts_older_and_longer_turns_never_system_or_last_user():
    doc = max((t for _, t in DOCS), key=len)
    msgs = [{"role": "system", "content": "You are a careful legal assistant."},
            {"role": "user", "content": doc[:12000]},            # oldest, long
            {"role": "assistant", "content": doc[12000:13000]},  # short
            {"role": "user", "content": doc[13000:25000]},       # newer, as long
            {"role": "tool", "content": '{"result": 1}', "tool_call_id": "t1"},
            {"role": "user", "content": "So, may I sell copies?"}]
    before = chat_tokens(msgs, TOK)
    assert before == MESSAGE_OVERHEAD_TOKENS * 6 + sum(TOK.count(m["content"]) for m in msgs)
    budget = before // 2
    res = compress_messages(msgs, budget, TOK)
    assert res.fits and res.tokens_after == chat_tokens(res.messages, TOK) <= budget
    for i in (0, 4, 5):
        assert res.messages[i] == msgs[i]
    kept = [TOK.count(res.messages[i]["content"]) / TOK.count(msgs[i]["content"])
            for i in (1, 2, 3)]
    assert kept[0] < kept[2]  # older turn cut harder than the newer one of equal length
    assert kept[1] >= kept[0]  # the short turn is cut least
    assert res.compressed_turns[0] == 1
    assert [m["role"] for m in res.messages] == [m["role"] for m in msgs]


def test_chat_whose_protected_turns_exceed_the_budget_does_not_fit():
    msgs = [{"role": "system", "content": "word " * 300}, {"role": "user", "content": "hi"}]
    res = compress_messages(msgs, 100, TOK)
    assert not res.fits and list(res.messages) == msgs


def test_water_filling_uses_the_budget_when_turns_are_fine_grained():
    sentences = " ".join(f"Sentence number {i} talks about item {i}." for i in range(300))
    msgs = [{"role": "user", "content": sentences}, {"role": "assistant", "content": sentences},
            {"role": "user", "content": "Which item came first?"}]
    before = chat_tokens(msgs, TOK)
    res = compress_messages(msgs, before // 3, TOK)
    assert res.fits
    # Sentences are ~10 tokens, so each cut turn wastes less than one sentence.
    assert before // 3 - res.tokens_after < 2 * 12
    assert np.isclose(res.tokens_after, before // 3, atol=30)


def _lcs_dp(a, b) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.integers(0, 5), max_size=40), b=st.lists(st.integers(0, 5), max_size=40))
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    assert lcs_length(a, b) == _lcs_dp(a, b) == lcs_length(b, a)


def test_rouge_coverage_and_head_tail():
    ref = "The quick brown fox jumps over the lazy dog."
    assert rouge_l_recall(ref, ref) == 1.0
    assert rouge_l_recall(ref, "the fox over the dog") == 5 / 9
    assert rouge_l_recall(ref, "dog lazy the") == 1 / 9  # reversed: one word in order
    assert term_coverage(ref, "quick jumps") == 2 / 5  # quick brown jumps over lazy
    text = " ".join(f"word{i}" for i in range(300))
    out = head_tail(text, 50, TOK)
    assert TOK.count(out) <= 50 and out.startswith("word0") and out.endswith("word299")
    assert head_tail("short", 50, TOK) == "short"

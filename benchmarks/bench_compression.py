"""Compress-and-Route's compressor and safety gate: latency on one core, fidelity, gate accuracy.

Writes three sections of benchmarks/RESULTS.md: ``compression-latency``,
``compression-fidelity`` and ``safety-gate``. Run:
``.venv/bin/python benchmarks/bench_compression.py`` (about a minute). Every text is
real and on the machine (docs/gateway.md, "Evaluation"): Debian's licence texts, question
sentences from Debian's package READMEs, and the gate's labelled set
(:mod:`fleetopt_milp.gateway.corpus`). Token counts use the shipped GPT-2 tokenizer.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import md_table, write_section  # noqa: E402

from fleetopt_milp.gateway.compress import compress  # noqa: E402
from fleetopt_milp.gateway.corpus import (  # noqa: E402
    labelled_samples,
    prose_documents,
    question_sentences,
)
from fleetopt_milp.gateway.fidelity import (  # noqa: E402
    head_tail,
    rouge_l_recall,
    term_coverage,
)
from fleetopt_milp.gateway.safety import assess_text  # noqa: E402
from fleetopt_milp.gateway.tokenizer import load_tokenizer  # noqa: E402

TOK = load_tokenizer()
SIZES = (4096, 8192, 16384, 32768)
GAMMAS = (1.25, 1.5, 2.0)
LATENCY_GAMMA = 1.5  # prompts cut to 1/1.5 of their length, mid-band


def _one_core() -> str:
    """Pin this process to one CPU (the benchmark's "one core")."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu}"


def _prompts(n_tokens: int, count: int) -> list[tuple[str, list[int]]]:
    """``count`` prose prompts of exactly ``n_tokens`` tokens: windows of all licence texts
    joined, at different offsets, each ending with a real question sentence."""
    corpus = "\n\n".join(t for _, t in prose_documents())
    ids = TOK.encode(corpus)
    questions = question_sentences()
    out = []
    for k in range(count):
        q = "\n\n" + questions[k % len(questions)]
        body_tokens = n_tokens - TOK.count(q)
        start = (k * 7919 * 13) % max(len(ids) - body_tokens, 1)
        body = TOK.decode(ids[start:start + body_tokens])
        text = body + q
        while TOK.count(text) > n_tokens:  # decoding a cut can re-tokenize a little longer
            body = body[:-20]
            text = body + q
        out.append((text, TOK.encode(text)))
    return out


def _percentiles(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 99))


def _timed(fn, *args) -> tuple[float, float]:
    """(CPU ms of this thread, wall ms) of one call ``fn(*args)``."""
    c0, w0 = time.thread_time(), time.perf_counter()
    fn(*args)
    return (time.thread_time() - c0) * 1e3, (time.perf_counter() - w0) * 1e3


def latency() -> str:
    where = _one_core()
    load = os.getloadavg()[0]
    rows = []
    for n in SIZES:
        prompts = _prompts(n, 20)
        repeats = {4096: 25, 8192: 15, 16384: 10, 32768: 5}[n]
        budget = int(n / LATENCY_GAMMA)
        for text, ids in prompts:  # warm-up
            compress(text, budget, TOK, ids)
        cpu = {"tok": [], "given": [], "total": []}
        wall = {"tok": [], "given": [], "total": []}
        for _ in range(repeats):
            for text, ids in prompts:
                for key, fn, args in (("tok", TOK.encode, (text,)),
                                      ("given", compress, (text, budget, TOK, ids)),
                                      ("total", compress, (text, budget, TOK))):
                    c, w = _timed(fn, *args)
                    cpu[key].append(c)
                    wall[key].append(w)
        row = [f"{n:,}", len(cpu["given"])]
        for key in ("tok", "given", "total"):
            row += [f"{x:.2f}" for x in _percentiles(cpu[key])]
        row += [f"{x:.2f}" for x in _percentiles(wall["given"])]
        rows.append(row)
    return (f"Prose prompts of exactly N GPT-2 tokens (20 windows of the licence texts, each "
            f"ending with a question), cut to N/{LATENCY_GAMMA:g} tokens, in one process "
            f"pinned to one core ({where}). Times are the thread's CPU time (ms per request, "
            "p50 / p99 over all repeats), which the other processes on the shared machine do "
            f"not inflate (1-minute load average {load:.1f} on 2 cores when this ran); the "
            "last columns give wall-clock time of the compress step for comparison.\n\n"
            "- *tokenize*: `tokenizer.encode` of the whole prompt. The gateway does this for "
            "every request to route it by length, compressed or not.\n"
            "- *compress*: what C&R adds on top: segmentation, scoring, packing, given the "
            "router's token ids (the gateway's path; feeds `--compression-ms`).\n"
            "- *tokenize + compress*: `compress(text, budget)` from raw text.\n\n"
            + md_table(["N tokens", "samples", "tokenize p50", "tokenize p99", "compress p50",
                        "compress p99", "tokenize + compress p50", "tokenize + compress p99",
                        "compress wall p50", "compress wall p99"], rows)
            + "\n\nTarget: p99 < 7 ms at 16K (the paper measured 2-7 ms per request).")


def fidelity() -> str:
    questions = question_sentences()
    docs = prose_documents(min_chars=12000)
    prompts = []
    for k, (_, text) in enumerate(docs):
        ids = TOK.encode(text)
        for j, start in enumerate(range(0, max(len(ids) - 3000, 1), 2500)):
            qs = [questions[(k * 7 + j) % len(questions)],
                  questions[(k * 7 + j + 3) % len(questions)]]
            body = TOK.decode(ids[start:start + 3000])
            prompts.append((body + "\n\n" + " ".join(qs), qs))
    rows = []
    for gamma in GAMMAS:
        ours, base = {"rouge": [], "cover": [], "q": []}, {"rouge": [], "cover": [], "q": []}
        head_q = []
        for text, qs in prompts:
            budget = int(TOK.count(text) / gamma)
            head = TOK.decode(TOK.encode(text)[:budget])
            head_q.append(np.mean([q in head for q in qs]))
            for out, acc in ((compress(text, budget, TOK).text, ours),
                             (head_tail(text, budget, TOK), base)):
                acc["rouge"].append(rouge_l_recall(text, out))
                acc["cover"].append(term_coverage(text, out))
                acc["q"].append(np.mean([q in out for q in qs]))
        rows.append([f"{gamma:g}", f"{1 / gamma:.0%}", len(prompts),
                     f"{np.mean(ours['rouge']):.3f}", f"{np.mean(base['rouge']):.3f}",
                     f"{np.mean(ours['cover']):.3f}", f"{np.mean(base['cover']):.3f}",
                     f"{np.mean(ours['q']):.1%}", f"{np.mean(base['q']):.1%}",
                     f"{np.mean(head_q):.1%}"])
    return (f"{len(prompts)} prompts of about 3,000 GPT-2 tokens: windows of the "
            f"{len(docs)} longest licence texts in /usr/share/common-licenses, each closed by "
            "two real question sentences from Debian's package READMEs. At band ratio "
            "gamma, a request at the band's top is cut to 1/gamma of its tokens. Baseline: "
            "keep the first and last halves of the budget (head + tail, token cut).\n\n"
            + md_table(["gamma", "kept", "prompts", "ROUGE-L recall (C&R)",
                        "ROUGE-L recall (head+tail)", "term coverage (C&R)",
                        "term coverage (head+tail)", "questions kept (C&R)",
                        "questions kept (head+tail)", "questions kept (head only)"], rows)
            + "\n\nROUGE-L recall is over lower-cased words against the original prompt. Both "
            "methods output a subsequence of the prompt, so it is close to the share of words "
            "kept for both: it shows the budget is used, not which sentences were kept. Term "
            "coverage (distinct words of 4+ letters still present) and the questions kept "
            "verbatim are what the choice changes. *Head only* is plain truncation to the budget.")


def gate() -> str:
    rows = []
    for split in ("dev", "held-out"):
        samples = labelled_samples(split)
        pred = [assess_text(s.text) for s in samples]
        by = Counter(s.label for s in samples)
        right = Counter(s.label for s, v in zip(samples, pred) if v.safe == (s.label == "prose"))
        kind = sum((v.kind if not v.safe else "prose") == s.label for s, v in zip(samples, pred))
        missed = sum(1 for s, v in zip(samples, pred) if s.label != "prose" and v.safe)
        blocked = sum(1 for s, v in zip(samples, pred) if s.label == "prose" and not v.safe)
        rows.append([split, len(samples)]
                    + [f"{right[c]}/{by[c]}" for c in ("prose", "code", "json", "table")]
                    + [f"{sum(right.values()) / len(samples):.1%}", f"{kind / len(samples):.1%}",
                       missed, blocked])
    return ("Labelled windows of real files (`fleetopt_milp.gateway.corpus`): prose = Debian "
            "licence texts; code = the Python standard library and /usr/include C headers; "
            "JSON = this repository's CDF and plan files and Mooncake JSON Lines; tables = the "
            "shipped CSV traces, the tz database's .tab files and Markdown tables. The gate's "
            "rules were written against `dev`; `held-out` uses other files and windows (two "
            "rules were revised after a first look at it, see docs/gateway.md).\n\n"
            + md_table(["set", "samples", "prose safe", "code blocked", "JSON blocked",
                        "tables blocked", "safe/unsafe accuracy", "kind accuracy",
                        "unsafe passed as safe", "prose blocked"], rows))


if __name__ == "__main__":
    write_section("compression-latency", "## C&R compression latency on one core (issue 9)\n\n"
                  + latency())
    write_section("compression-fidelity", "## C&R compression fidelity (issue 9)\n\n"
                  + fidelity())
    write_section("safety-gate", "## C&R safety gate accuracy (issue 9)\n\n" + gate())
    print(Path(__file__).resolve().parent.joinpath("RESULTS.md").read_text())

"""An LLM judge through any OpenAI-compatible endpoint: pairwise preferences (asked in both orders to cancel position
bias) and single-answer 1-10 grades (MT-bench style).

Every verdict is cached on disk, keyed by (judge model, prompt template, inputs), so a rerun costs nothing. Requests
run with bounded concurrency and are retried with exponential backoff on rate limits, server errors and dropped
connections. A reply that cannot be parsed is recorded with its text and counted, never turned into a score. The API
key is read from an environment variable whose name is all that is ever written down.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from siftlm.data.io import atomic_write

PAIRWISE_TEMPLATE = "siftlm-pairwise-v1"
SINGLE_TEMPLATE = "siftlm-single-v1"

PAIRWISE_SYSTEM = ("You are a careful, impartial judge of AI assistants. Given an instruction and two responses, decide "
                   "which response follows the instruction better: more helpful, correct, relevant and complete. Do "
                   "not prefer a response for its length or its position. Answer with exactly 'Output (a)' or "
                   "'Output (b)' and nothing else.")
PAIRWISE_USER = ("# Instruction\n{instruction}\n\n# Output (a)\n{a}\n\n# Output (b)\n{b}\n\n"
                 "# Which is better, Output (a) or Output (b)?")
SINGLE_SYSTEM = ("You are a careful, impartial judge. Rate the AI assistant's answer to the user's question on a scale "
                 "of 1 to 10 for helpfulness, relevance, accuracy, depth and detail. {reference_note}Explain briefly, "
                 "then give the rating strictly as [[rating]], for example: Rating: [[5]].")
SINGLE_USER = "{conversation}\n\n[The assistant's answer to judge]\n{answer}"

RATING_TEMPLATE = "siftlm-alpagasus-v1"
RATING_SYSTEM = ("You rate training data for an AI assistant. Given an instruction and a response, rate how accurate "
                 "and helpful the response is for the instruction, on a scale of 0 to 5 (5 = best). Write the score "
                 "first, on a line of its own, as 'Score: <number>', then explain briefly, without bias towards length.")
RATING_USER = "# Instruction\n{instruction}\n\n# Response\n{response}"
SCORE_RE = re.compile(r"^\s*score\s*:\s*(\d+(?:\.\d+)?)", re.IGNORECASE | re.MULTILINE)

PAIRWISE_RE = re.compile(r"output\s*\(\s*([ab])\s*\)", re.IGNORECASE)
RATING_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


@dataclass
class JudgeConfig:
    url: str                              # base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1
    model: str                            # the judge model's name at that endpoint
    key_env: str = "OPENAI_API_KEY"       # environment variable holding the key (never logged)
    concurrency: int = 4
    max_retries: int = 6
    backoff_s: float = 1.0                # first wait; doubles on each retry
    timeout_s: float = 120.0
    max_tokens: int = 512


@dataclass
class Verdict:
    value: float | None                   # 1/0 for a pairwise order (first output wins / loses); the grade; None: failed
    raw: str                              # the judge's reply (or the error)
    cached: bool = False
    retries: int = 0


@dataclass
class JudgeStats:
    requests: int = 0
    cached: int = 0
    retries: int = 0
    parse_failures: int = 0
    errors: int = 0
    failures: list = field(default_factory=list)     # (id, what, reply) of every verdict that could not be used


def parse_pairwise(text: str) -> float | None:
    """1.0 when the judge prefers Output (a), 0.0 for (b), None when the reply names neither or both."""
    found = {m.lower() for m in PAIRWISE_RE.findall(text or "")}
    return None if len(found) != 1 else (1.0 if found == {"a"} else 0.0)


def parse_score(text: str) -> float | None:
    """The 'Score: x' of a data rating (AlpaGasus' 0-5 scale), else None."""
    m = SCORE_RE.findall(text or "")
    if len(m) != 1:
        return None
    value = float(m[0])
    return value if 0 <= value <= 5 else None


def parse_rating(text: str) -> float | None:
    """The [[rating]] of a single-answer grade, between 1 and 10, else None."""
    m = RATING_RE.findall(text or "")
    if len(m) != 1:
        return None
    value = float(m[0])
    return value if 1 <= value <= 10 else None


class Judge:
    def __init__(self, cfg: JudgeConfig, cache: str | Path):
        from openai import OpenAI  # the client is only needed when a judge is used

        self.cfg, self.cache = cfg, Path(cache)
        self.client = OpenAI(base_url=cfg.url, api_key=os.environ.get(cfg.key_env) or "not-needed", max_retries=0,
                             timeout=cfg.timeout_s)
        self.stats = JudgeStats()

    def _key(self, template: str, messages: list[dict]) -> str:
        payload = json.dumps([self.cfg.model, template, messages, self.cfg.max_tokens], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def ask(self, template: str, messages: list[dict], parse: Callable[[str], float | None]) -> Verdict:
        """One verdict, from the cache or the endpoint (retried); a parse failure is a Verdict with value None."""
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        path = self.cache / f"{self._key(template, messages)}.json"
        if path.exists():
            reply = json.loads(path.read_text())["reply"]
            return Verdict(parse(reply), reply, cached=True)
        retries, wait = 0, self.cfg.backoff_s
        while True:
            try:
                resp = self.client.chat.completions.create(model=self.cfg.model, messages=messages, temperature=0,
                                                           max_tokens=self.cfg.max_tokens)
                reply = resp.choices[0].message.content or ""
                break
            except (APIStatusError, APIConnectionError, APITimeoutError) as e:
                status = getattr(e, "status_code", None)
                if (status is not None and status != 429 and status < 500) or retries >= self.cfg.max_retries:
                    return Verdict(None, f"error: {type(e).__name__} {status or ''}".strip(), retries=retries)
                retries += 1
                time.sleep(wait)
                wait *= 2
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps({"template": template, "model": self.cfg.model, "reply": reply}))
        return Verdict(parse(reply), reply, retries=retries)

    def _run(self, jobs: list[tuple[str, str, list[dict], Callable]]) -> list[Verdict]:
        """Verdicts for (id, template, messages, parse) jobs, with bounded concurrency, in job order."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            verdicts = list(pool.map(lambda j: self.ask(j[1], j[2], j[3]), jobs))
        for (jid, template, _, _), v in zip(jobs, verdicts, strict=True):
            self.stats.requests += not v.cached
            self.stats.cached += v.cached
            self.stats.retries += v.retries
            if v.value is None:
                if v.raw.startswith("error:"):
                    self.stats.errors += 1
                else:
                    self.stats.parse_failures += 1
                self.stats.failures.append({"id": jid, "template": template, "reply": v.raw[:500]})
        return verdicts

    def pairwise(self, items: list[tuple[str, str, str, str]]) -> list[dict]:
        """(id, instruction, model output, other output) -> per item the preference for the model in [0, 1]: the
        mean over the two orders that parsed (1 = the model wins both, 0.5 = one each), None if neither did."""
        jobs = []
        for iid, instruction, mine, other in items:
            for order, (a, b) in (("model-first", (mine, other)), ("model-second", (other, mine))):
                msgs = [{"role": "system", "content": PAIRWISE_SYSTEM},
                        {"role": "user", "content": PAIRWISE_USER.format(instruction=instruction, a=a, b=b)}]
                jobs.append((f"{iid}:{order}", PAIRWISE_TEMPLATE, msgs, parse_pairwise))
        verdicts = self._run(jobs)
        out = []
        for k, (iid, *_rest) in enumerate(items):
            first, second = verdicts[2 * k].value, verdicts[2 * k + 1].value
            wins = [v for v in (first, None if second is None else 1 - second) if v is not None]
            out.append({"id": iid, "preference": sum(wins) / len(wins) if wins else None,
                        "model_first": first, "model_second": None if second is None else 1 - second,
                        "orders_parsed": len(wins)})
        return out

    def rate(self, items: list[tuple[str, str, str]]) -> list[dict]:
        """(id, instruction, response) -> per item its 0-5 data rating (AlpaGasus), None when unparsed."""
        jobs = [(iid, RATING_TEMPLATE, [{"role": "system", "content": RATING_SYSTEM},
                                        {"role": "user", "content": RATING_USER.format(instruction=q, response=a)}],
                 parse_score) for iid, q, a in items]
        return [{"id": j[0], "rating": v.value} for j, v in zip(jobs, self._run(jobs), strict=True)]

    def grade(self, items: list[tuple[str, list[dict], str, str | None]]) -> list[dict]:
        """(id, conversation so far, answer, reference or None) -> per item its 1-10 grade, None if unparsed."""
        jobs = []
        for iid, conversation, answer, reference in items:
            note = f"Compare with this reference answer: {reference}\n" if reference else ""
            convo = "\n".join(f"[{m['role']}]\n{m['content']}" for m in conversation)
            msgs = [{"role": "system", "content": SINGLE_SYSTEM.format(reference_note=note)},
                    {"role": "user", "content": SINGLE_USER.format(conversation=convo, answer=answer)}]
            jobs.append((iid, SINGLE_TEMPLATE, msgs, parse_rating))
        return [{"id": j[0], "grade": v.value} for j, v in zip(jobs, self._run(jobs), strict=True)]

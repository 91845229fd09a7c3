"""An LLM judge through any OpenAI-compatible endpoint: pairwise preferences (asked in both orders to cancel position
bias) and single-answer 1-10 grades (MT-bench style).

Every verdict is cached on disk, keyed by (judge model, prompt template, inputs), so a rerun costs nothing. Requests
run with bounded concurrency, each with a timeout, and are retried with exponential backoff on rate limits, server
errors, timeouts and dropped connections, within a total retry budget for the whole run (a judge that stopped
answering costs minutes, not hours). Whatever goes wrong with one item (an error status, a reply that is not a chat
completion, such as an HTML page or other JSON, or a verdict that cannot be parsed) is recorded with its reason and
counted as that item's failure, never turned into a score and never a crash. The API key is read from an
environment variable whose name is all that is ever written down: every text taken from a reply (a verdict, an
error page, an error message) has the key replaced by that name before it is cached, written or printed, since an
endpoint or a proxy may echo the request's headers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from siftlm.config import JudgeConfig, UsageError
from siftlm.data.write import write_jsonl
from siftlm.errors import SiftlmError
from siftlm.keyed import open_keyed
from siftlm.progress import bar

CACHE_VERSION = 1
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


class JudgeReplyError(ValueError):
    """The endpoint answered, but not with a chat completion (an HTML page, other JSON)."""


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


MIN_SECRET = 4          # a shorter "key" (e.g. a placeholder) is not searched for: it would mangle ordinary text


def scrub(text: str, secret: str | None, name: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``$name`` (the environment variable it came from)."""
    if not secret or len(secret) < MIN_SECRET or not isinstance(text, str):
        return text
    return text.replace(secret, f"${name}")


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

        if not cfg.url:
            raise UsageError("a judge needs --judge-url (an OpenAI-compatible endpoint)")
        self.cfg = cfg
        # content-addressed verdicts: a unit is one request, done when its reply file exists (written atomically)
        self.cache = open_keyed(cache, {"kind": "judge verdicts", "version": CACHE_VERSION}, what="a judge cache")
        self._secret = os.environ.get(cfg.key_env) or ""
        self.client = OpenAI(base_url=cfg.url, api_key=self._secret or "not-needed", max_retries=0,
                             timeout=cfg.timeout_s)
        self.stats = JudgeStats()
        self._budget_left, self._budget_lock, self._silent = cfg.retry_budget_s, threading.Lock(), 0

    def _scrub(self, text: str) -> str:
        """A text taken from a reply, with the API key replaced by its variable's name."""
        return scrub(text, self._secret, self.cfg.key_env)

    def _key(self, template: str, messages: list[dict]) -> str:
        payload = json.dumps([self.cfg.model, template, messages, self.cfg.max_tokens], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _answered(self, answered: bool) -> None:
        with self._budget_lock:
            self._silent = 0 if answered else self._silent + 1

    def _unavailable(self) -> bool:
        """The retry budget is spent and the last 2 x concurrency requests got no answer at all: stop asking."""
        with self._budget_lock:
            return self._budget_left <= 0 and self._silent >= 2 * self.cfg.concurrency

    def _spend(self, seconds: float) -> bool:
        """Take ``seconds`` from the run's retry budget; False when it is spent (then no more retries)."""
        with self._budget_lock:
            if self._budget_left <= 0:
                return False
            self._budget_left -= seconds
            return True

    def _request(self, messages: list[dict]) -> str:
        """The reply text of one chat completion; raises ``JudgeReplyError`` when the answer is not one."""
        resp = self.client.chat.completions.create(model=self.cfg.model, messages=messages, temperature=0,
                                                   max_tokens=self.cfg.max_tokens)
        try:
            content = resp.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            content = None
        if not isinstance(content, str):
            shown = resp if isinstance(resp, str) else getattr(resp, "model_dump_json", lambda: repr(resp))()
            raise JudgeReplyError(f"not a chat completion: {self._scrub(str(shown))[:200]!r}")
        return self._scrub(content)

    def ask(self, template: str, messages: list[dict], parse: Callable[[str], float | None]) -> Verdict:
        """One verdict, from the cache or the endpoint (retried); any failure is a Verdict with value None and the
        reason in ``raw`` (starting "error:")."""
        from openai import APIConnectionError, APIError, APIStatusError, APITimeoutError

        name = f"{self._key(template, messages)}.json"
        if self.cache.path(name).exists():
            reply = self._scrub(json.loads(self.cache.path(name).read_text())["reply"])
            return Verdict(parse(reply), reply, cached=True)
        retries, wait = 0, self.cfg.backoff_s
        while True:
            if self._unavailable():
                return Verdict(None, f"error: judge unavailable (the last {self._silent} requests got no answer and "
                                     "the retry budget is spent)", retries=retries)
            started = time.perf_counter()
            try:
                reply = self._request(messages)
                self._answered(True)
                break
            except (APIStatusError, APIConnectionError, APITimeoutError) as e:
                self._answered(isinstance(e, APIStatusError))
                status = getattr(e, "status_code", None)
                why = f"error: {type(e).__name__}{f' {status}' if status else ''}"     # never the body: it may echo the key
                if status is not None and status != 429 and status < 500:
                    return Verdict(None, why, retries=retries)
                spent = time.perf_counter() - started if isinstance(e, APITimeoutError) else 0.0
                if retries >= self.cfg.max_retries or not self._spend(spent + wait):
                    budget = "" if retries >= self.cfg.max_retries else " (retry budget spent)"
                    return Verdict(None, f"{why} after {retries} retries{budget}", retries=retries)
                retries += 1
                time.sleep(wait)
                wait *= 2
            except (JudgeReplyError, APIError, ValueError) as e:   # a 200 that is not a chat completion
                return Verdict(None, f"error: {type(e).__name__}: {self._scrub(str(e))[:300]}", retries=retries)
        self.cache.write(name, json.dumps({"template": template, "model": self.cfg.model, "reply": reply}))
        return Verdict(parse(reply), reply, retries=retries)

    def _run(self, jobs: list[tuple[str, str, list[dict], Callable]]) -> list[Verdict]:
        """Verdicts for (id, template, messages, parse) jobs, with bounded concurrency and progress, in job order."""
        verdicts: list[Verdict | None] = [None] * len(jobs)
        with bar("judge", len(jobs), enabled=self.cfg.progress) as advance, \
                ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            futures = {pool.submit(self.ask, j[1], j[2], j[3]): k for k, j in enumerate(jobs)}
            for f in as_completed(futures):
                verdicts[futures[f]] = f.result()
                advance(1)
        for (jid, template, _, _), v in zip(jobs, verdicts, strict=True):
            self.stats.requests += not v.cached
            self.stats.cached += v.cached
            self.stats.retries += v.retries
            if v.value is None:
                if v.raw.startswith("error:"):
                    self.stats.errors += 1
                else:
                    self.stats.parse_failures += 1
                failed = v.raw.startswith("error:")
                self.stats.failures.append({"id": jid, "template": template,
                                            "reason": v.raw.removeprefix("error: ") if failed else "no verdict in the reply",
                                            "reply": "" if failed else v.raw[:500]})
        return verdicts

    def check(self, total: int, what: str = "items") -> None:
        """Raise (the CLI exits 1) when nothing was judged, or more than ``max_failures`` of ``total`` failed; call
        after the results and ``failures.jsonl`` are written."""
        failed = len(self.stats.failures)
        if total and failed == total:
            raise SiftlmError(f"no verdict for any of the {total} {what} (first reason: "
                               f"{self.stats.failures[0]['reason']}); see failures.jsonl")
        if total and failed / total > self.cfg.max_failures:
            raise SiftlmError(f"{failed} of {total} {what} failed (more than --judge-max-failures "
                               f"{self.cfg.max_failures:g}); see failures.jsonl")

    def write_failures(self, path: str | Path) -> Path:
        """Every failed item of this run with its reason, one JSON object a line (an empty file when none failed)."""
        write_jsonl(self.stats.failures, path)
        return Path(path)

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

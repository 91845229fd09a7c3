"""A small OpenAI-compatible chat server on 127.0.0.1 with deterministic rules, for judge tests (nothing leaves the
machine): pairwise prompts prefer the output containing GOOD (and say "Output (a)" when neither or both do: a
position bias the two orders must cancel); grading prompts give [[9]] to answers with GOOD and [[2]] otherwise; an
instruction containing UNPARSEABLE gets a reply with no verdict; the first requests can be made to fail: with an error
status, with a 200 that is not a chat completion ("html": a web page, "junk": other JSON), or with silence ("silent":
no answer for ``silence_s`` seconds, longer than any timeout the tests set), or with the request's headers echoed
back ("echo": a web page showing them, "echo-reply": a chat completion quoting them, "echo-401": an error body
quoting them); ``always`` repeats one failure for every request."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Rules:
    def __init__(self, fail_with: list | None = None, always=None, silence_s: float = 5.0):
        self.fail_with = list(fail_with or [])      # what the first requests get, in order: a status, html, junk, silent
        self.always = always                        # what every later request gets (None: a real answer)
        self.silence_s = silence_s
        self.requests = 0
        self.lock = threading.Lock()

    def reply(self, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        if "UNPARSEABLE" in text:
            return "I cannot decide between these."
        if text.startswith("# Instruction\n") and "\n\n# Response\n" in text:          # a data rating (AlpaGasus)
            return "Score: 5\nAccurate." if "GOOD" in text.split("# Response\n", 1)[1] else "Score: 1\nWrong."
        m = re.search(r"# Output \(a\)\n(.*)\n\n# Output \(b\)\n(.*)\n\n# Which", text, re.S)
        if m:
            a, b = ("GOOD" in m.group(1)), ("GOOD" in m.group(2))
            return "Output (b)" if b and not a else "Output (a)"
        answer = text.split("[The assistant's answer to judge]\n", 1)[-1]
        return "Solid answer. Rating: [[9]]" if "GOOD" in answer else "Weak. Rating: [[2]]"


def serve(rules: Rules):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with rules.lock:
                rules.requests += 1
                status = rules.fail_with.pop(0) if rules.fail_with else (rules.always or 200)
            kind, data, content = "application/json", None, None
            if status == "silent":
                time.sleep(rules.silence_s)             # the client has given up by now
                status = 200
            headers = "\n".join(f"{k}: {v}" for k, v in sorted(self.headers.items(),       # the key first
                                                                 key=lambda kv: kv[0].lower() != "authorization"))
            if status == "echo":
                status, kind, data = 200, "text/html", f"<html><body><pre>{headers}</pre></body></html>".encode()
            elif status == "echo-reply":
                status, content = 200, f"Your request came with\n{headers}"
            elif status == "echo-401":
                status, data = 401, json.dumps({"error": {"message": f"bad key in {headers}", "code": 401}}).encode()
            if status == "html":
                status, kind, data = 200, "text/html", b"<html><body><h1>Gateway login</h1></body></html>"
            elif status == "junk":
                status, data = 200, json.dumps({"foo": 1}).encode()
            elif data is not None:
                pass
            elif status != 200:
                data = json.dumps({"error": {"message": "injected", "type": "server_error", "code": status}}).encode()
            else:
                data = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant",
                                                            "content": content or rules.reply(body["messages"])}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"

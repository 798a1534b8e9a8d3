"""``policyc lsp`` driven through the Language Server Protocol over stdio, as an editor does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty, Queue

import pytest

ROOT = Path(__file__).resolve().parents[2]
URI = "file:///tmp/dbcache.policy"
TEXT = (ROOT / "policies" / "dbcache.policy").read_text(encoding="utf-8")


class Client:
    """A minimal JSON-RPC client over the server's stdin/stdout (Content-Length framing)."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "policy_lang.cli", "lsp", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.inbox: Queue = Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.inbox.put(json.loads(out.read(length)))

    def send(self, method: str, params, request: bool = True):
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            msg["id"] = self.next_id
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return msg.get("id")

    def wait(self, match, timeout: float = 60.0) -> dict:
        while True:
            try:
                msg = self.inbox.get(timeout=timeout)
            except Empty:
                raise AssertionError("no answer from the server") from None
            if match(msg):
                return msg

    def request(self, method: str, params) -> dict:
        ident = self.send(method, params)
        msg = self.wait(lambda m: m.get("id") == ident and "method" not in m)
        assert "error" not in msg, msg
        return msg["result"]

    def diagnostics(self) -> list[dict]:
        return self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")["params"]["diagnostics"]

    def close(self) -> None:
        try:
            self.request("shutdown", None)
            self.send("exit", None, request=False)
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def client():
    c = Client("--explain-steps", "30")
    result = c.request("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                      "initializationOptions": {"explainSteps": 20}})
    caps = result["capabilities"]
    assert caps["hoverProvider"] and caps["definitionProvider"] and caps["documentFormattingProvider"]
    assert caps["completionProvider"] and caps["codeActionProvider"]
    c.send("initialized", {}, request=False)
    c.send("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "policy", "version": 1,
                                                     "text": TEXT}}, request=False)
    assert c.diagnostics() == []  # the library policy is clean
    yield c
    c.close()


def _pos(text: str, needle: str, plus: int = 1) -> dict:
    offset = text.index(needle) + plus
    line = text.count("\n", 0, offset)
    return {"line": line, "character": offset - (text.rfind("\n", 0, offset) + 1)}


def _change(client: Client, text: str, version: int) -> list[dict]:
    client.send("textDocument/didChange", {"textDocument": {"uri": URI, "version": version},
                                           "contentChanges": [{"text": text}]}, request=False)
    return client.diagnostics()


def test_diagnostics_as_you_type_match_policyc_check(client):
    from policy_lang import PolicyError, compile_source

    bad = TEXT.replace("drift(probe) > threshold", "drift(probe) > treshold")
    published = _change(client, bad, 2)
    with pytest.raises(PolicyError) as err:
        compile_source(bad)
    # every finding of `policyc check`, in its order: the error and the now unused param's warning
    assert [(d["code"], d["severity"]) for d in published] == [
        (d.code, 1 if d.is_error else 2) for d in err.value.diagnostics] == [("P0201", 1), ("P0508", 2)]
    diag, expected = published[0], err.value.diagnostics[0]
    assert diag["code"] == expected.code == "P0201" and diag["severity"] == 1 and diag["source"] == "policyc"
    assert diag["message"] == f"{expected.message}\nhelp: {expected.help}"
    assert diag["range"]["start"] == {"line": expected.span.line - 1, "character": expected.span.col - 1}
    assert diag["range"]["end"]["character"] - diag["range"]["start"]["character"] == len("treshold")

    # the fix-it the diagnostic carries, as a quick fix
    actions = client.request("textDocument/codeAction", {"textDocument": {"uri": URI}, "range": diag["range"],
                                                         "context": {"diagnostics": [diag]}})
    (action,) = actions
    assert action["kind"] == "quickfix" and action["edit"]["changes"][URI][0]["newText"] == "threshold"
    assert _change(client, TEXT, 3) == []


def test_hover_on_param_signal_and_rule_with_what_explain_proves(client):
    pos = _pos(TEXT, "param threshold", plus=7)
    hover = client.request("textDocument/hover", {"textDocument": {"uri": URI}, "position": pos})
    assert hover["contents"]["value"] == "param `threshold`: number = 0.08 in 0..1"
    rule = client.request("textDocument/hover", {"textDocument": {"uri": URI},
                                                 "position": _pos(TEXT, "if drift(probe) > threshold")})
    text = rule["contents"]["value"]
    # initializationOptions.explainSteps (20) wins over the command line's 30: warm-up 8, cache at 8..19
    assert "**s0.r0** `if drift(probe) > threshold: recompute` — at 20 calls" in text
    assert "fires at steps 8..19 (12 of 20 steps)" in text and "at most 12 calls without a recompute" in text
    signal = client.request("textDocument/hover", {"textDocument": {"uri": URI}, "position": _pos(TEXT, "drift(")})
    assert "rel-L1 change of a tensor source against the last recompute" in signal["contents"]["value"]


def test_definition_completion_and_formatting(client):
    use = _pos(TEXT, "> threshold", plus=3)
    loc = client.request("textDocument/definition", {"textDocument": {"uri": URI}, "position": use})
    assert loc["uri"] == URI and loc["range"]["start"] == _pos(TEXT, "threshold = 0.08", plus=0)
    items = client.request("textDocument/completion", {"textDocument": {"uri": URI}, "position": use})["items"]
    labels = {i["label"] for i in items}
    assert {"noise", "since_recompute", "delta", "taylor", "adams", "recompute", "cache", "blocks", "frames",
            "threshold", "warmup_steps"} <= labels
    messy = TEXT.replace("    param threshold = 0.08", "param   threshold=0.08")
    assert _change(client, messy, 4) == []
    (edit,) = client.request("textDocument/formatting", {"textDocument": {"uri": URI},
                                                         "options": {"tabSize": 4, "insertSpaces": True}})
    assert edit["newText"] == TEXT and edit["range"]["start"] == {"line": 0, "character": 0}
    assert _change(client, TEXT, 5) == []
    assert client.request("textDocument/formatting", {"textDocument": {"uri": URI},
                                                      "options": {"tabSize": 4, "insertSpaces": True}}) == []

"""Plugin files for the hot-swap tests: a counter whose state format changes in v2."""

from __future__ import annotations

COUNTER_V1 = '''
from daemon.plugin import Plugin, Deny

class Counter(Plugin):
    name = "counter"
    version = 1
    priority = 10

    def initial_state(self):
        return {"counts": {}}

    async def before_call(self, call):
        if call.arguments.get("blocked"):
            return Deny("blocked by v1", "policy")
        counts = self.state["counts"]
        counts[call.agent] = counts.get(call.agent, 0) + 1
        return None

    async def after_call(self, call, result):
        n = self.state["counts"][call.agent]
        text = result["content"][0]["text"]
        return {**result, "content": [{"type": "text", "text": f"{text} [v1 #{n}]"}]}
'''

COUNTER_V2 = '''
from daemon.plugin import Plugin, Deny

class Counter(Plugin):
    name = "counter"
    version = 2
    priority = 10

    def initial_state(self):
        return {"per_agent": {}}

    def migrate(self, old_state, old_version):
        if old_version == 1:
            return {"per_agent": {a: {"n": n} for a, n in old_state["counts"].items()}}
        return old_state

    async def before_call(self, call):
        if call.arguments.get("blocked"):
            return Deny("blocked by v2", "policy")
        entry = self.state["per_agent"].setdefault(call.agent, {"n": 0})
        entry["n"] += 1
        return call.with_arguments({**call.arguments, "seen_by": "v2"})

    async def after_call(self, call, result):
        n = self.state["per_agent"][call.agent]["n"]
        text = result["content"][0]["text"]
        return {**result, "content": [{"type": "text", "text": f"{text} [v2 #{n}]"}]}
'''

COUNTER_V3 = COUNTER_V2.replace("version = 2", "version = 3").replace("[v2 #", "[v3 #") \
    .replace("old_version == 1", "old_version in (1, 2) and 'counts' in old_state")

BROKEN = {
    "syntax error": COUNTER_V2.replace("def migrate", "def migrate(:"),
    "import-time crash": "import os\nos.kill(os.getpid(), 9)\n" + COUNTER_V2,
    "import-time infinite loop": "while True:\n    pass\n" + COUNTER_V2,
    "migrate raising": COUNTER_V2.replace(
        "        if old_version == 1:", "        raise ValueError('cannot migrate')\n"
                                        "        if old_version == 1:"),
    "same version": COUNTER_V1.replace("[v1 #", "[v1-again #"),
    "no plugin class": "x = 1\n",
}

FLAKY = '''
import asyncio
from daemon.plugin import Plugin

class Flaky(Plugin):
    name = "flaky"
    version = 1
    priority = 5

    async def before_call(self, call):
        if call.arguments.get("boom"):
            raise RuntimeError("kaboom")
        if call.arguments.get("slow"):
            await asyncio.sleep(1)
        return None
'''

STRICT = '''
from daemon.plugin import Plugin, Deny

class Strict(Plugin):
    name = "strict"
    version = 1

    async def before_call(self, call):
        return Deny("nothing is allowed", "guardrail")
'''

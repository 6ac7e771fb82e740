"""The Claude Code-like prompts shared by bench_agent.py and bench_fleet.py:
the coding-agent rules of the system prompt, the user questions, and the
billing header whose hash changes every request."""
import random

RULES = [
    "read the file before you edit it", "keep changes small and focused", "run the tests after each change",
    "never commit secrets", "prefer the standard library", "explain what you changed and why",
    "ask before deleting files", "match the existing code style", "write tests for new behaviour",
    "keep functions short", "name things for what they mean", "handle every error explicitly",
]
SYSTEM = "You are a coding agent working in the user's repository.\n" + "".join(
    f"Rule {i + 1}: {RULES[i % len(RULES)]}, and say so in one sentence when it matters ({i}).\n"
    for i in range(75)
)
QUESTIONS = [
    "List three things to check before editing a file.",
    "Why keep changes small?",
    "What should a commit message say?",
    "How do you name a test?",
    "When do you ask the user first?",
    "What do you do when a test fails?",
]


def billing():
    v = "".join(random.choices("0123456789abcdef", k=3))
    h = "".join(random.choices("0123456789abcdef", k=5))
    return f"x-anthropic-billing-header: cc_version=2.1.37.{v}; cc_entrypoint=cli; cch={h};"

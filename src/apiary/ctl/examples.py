"""The ``Examples:`` section of every command's ``--help``, and help text made markup-safe.

Kept in one table so that every command has examples (tests/ctl/test_ctl_help.py checks it)
and a new command without any is noticed. :func:`finish` adds them to the click commands when
the CLI is built, and escapes what Rich would read as markup in every help text: a docstring
that says ``[drone]`` is shown as ``[drone]``, not swallowed as a style tag.
"""

from __future__ import annotations

from rich.markup import escape
from typer._click.core import Command
from typer.core import TyperGroup as Group

EXAMPLES: dict[str, list[str]] = {
    "apply": [
        "apiaryctl apply -f examples/quickstart/",
        "apiaryctl apply -f hive.yaml --dry-run",
        "apiaryctl get hive h -o yaml | apiaryctl apply -f -",
    ],
    "get": [
        "apiaryctl get hives",
        "apiaryctl get drones -o wide -l apiary.io/hive=quickstart",
        "apiaryctl get hive quickstart -o yaml",
        "apiaryctl get drones -A -w --watch-timeout 1m",
        "apiaryctl get drones -o jsonpath='{.items[*].metadata.name}'",
    ],
    "describe": [
        "apiaryctl describe hive quickstart",
        "apiaryctl describe drone/quickstart-echo-1a2b3c4d-0 -n team-a",
    ],
    "delete": [
        "apiaryctl delete hive quickstart",
        "apiaryctl delete -f examples/quickstart/ --ignore-not-found",
    ],
    "diff": ["apiaryctl diff -f hive.yaml", "apiaryctl diff -f manifests/ -R"],
    "wait": [
        "apiaryctl wait hive/quickstart --for=condition=Ready --timeout 2m",
        "apiaryctl wait session/job-1a2b --for=phase=Succeeded",
        "apiaryctl wait hive/old --for=delete",
    ],
    "logs": [
        "apiaryctl logs hive/quickstart --tail 20",
        "apiaryctl logs drone/quickstart-echo-1a2b3c4d-0 -f --timestamps",
        "apiaryctl logs hive/quickstart --since 5m",
    ],
    "scale": [
        "apiaryctl scale hive/quickstart --stage shout --replicas 4",
        "apiaryctl scale agentspec/worker --replicas 2",
    ],
    "patch": [
        "apiaryctl patch hive h -p '{metadata: {labels: {team: a}}}'",
        "apiaryctl patch hive/h --type json -p "
        '\'[{"op": "replace", "path": "/spec/stages/0/replicas", "value": 3}]\'',
    ],
    "run": [
        'apiaryctl run hive/quickstart --input "hello bees"',
        "apiaryctl run hive/planner --input-file task.txt --timeout 5m",
        "echo '{\"q\": 1}' | apiaryctl run hive/h - --json -o json",
    ],
    "session create": [
        "apiaryctl session create hive/quickstart --name chat-1",
        "S=$(apiaryctl session create hive/quickstart -o name)",
    ],
    "session send": ['apiaryctl session send chat-1 "and then?"'],
    "session get": ["apiaryctl session get chat-1 -o yaml"],
    "session transcript": [
        "apiaryctl session transcript chat-1",
        "apiaryctl session transcript job-1a2b -o json",
    ],
    "session close": ["apiaryctl session close chat-1"],
    "dlq list": ["apiaryctl dlq list hive/quickstart", "apiaryctl dlq list hive/quickstart --all"],
    "dlq show": ["apiaryctl dlq show hive/quickstart 3f2a"],
    "dlq replay": [
        "apiaryctl dlq replay hive/quickstart 3f2a",
        "apiaryctl dlq replay hive/h --all",
    ],
    "dlq purge": ["apiaryctl dlq purge hive/quickstart 3f2a", "apiaryctl dlq purge hive/h --all"],
    "approve": ["apiaryctl approve session/job-1a2b", "apiaryctl approve session/s --stage review"],
    "reject": ['apiaryctl reject session/job-1a2b --reason "not today"'],
    "budget raise": [
        "apiaryctl budget raise session/s --tokens 20000",
        "apiaryctl budget raise hive/research --usd 5",
    ],
    "budget show": ["apiaryctl budget show", "apiaryctl budget show -o json"],
    "session replay": [
        "apiaryctl session replay golden --hive research-v2 --mode mixed",
        "apiaryctl session replay golden -o json",
    ],
    "top drones": ["apiaryctl top drones", "apiaryctl top drones -A -o wide"],
    "top hives": ["apiaryctl top hives", "apiaryctl top hives -o json"],
    "token create": [
        "apiaryctl token create ci --cell team-a --role developer --ttl 24h",
        "(umask 077; apiaryctl token create worker-1 --node worker-1 > node.token)",
    ],
    "token list": ["apiaryctl token list"],
    "token revoke": ["apiaryctl token revoke ci"],
    "version": ["apiaryctl version", "apiaryctl version --client"],
    "config set": [
        "apiaryctl config set server http://apiary.internal:8080",
        'apiaryctl config set token "$(cat token.txt)"',
        'apiaryctl config set cell ""            # removes the key',
    ],
    "config view": ["apiaryctl config view", "apiaryctl config view --show-token"],
    "config path": ["apiaryctl config path"],
    "config set-context": [
        "apiaryctl config set-context prod --server https://apiary.example:8080 --cell team-a",
        'apiaryctl config set-context prod --token "$(cat prod.token)"',
    ],
    "config use-context": ["apiaryctl config use-context prod"],
    "config get-contexts": ["apiaryctl config get-contexts"],
    "config current-context": ["apiaryctl config current-context"],
    "config delete-context": ["apiaryctl config delete-context old"],
    "comb get": ["apiaryctl comb get session/chat-1 plan"],
    "comb set": [
        "apiaryctl comb set session/chat-1 plan '{\"steps\": 3}'",
        "apiaryctl comb set session/chat-1 note hello --string --ttl 10m",
    ],
    "comb incr": ["apiaryctl comb incr session/chat-1 hits --by 2"],
    "comb delete": ["apiaryctl comb delete session/chat-1 plan"],
    "comb keys": ["apiaryctl comb keys session/chat-1", "apiaryctl comb keys session/chat-1 'p*'"],
    "comb clear": ["apiaryctl comb clear session/chat-1"],
    "memory add": ['apiaryctl memory add "the cat is called Tom" --meta source=chat'],
    "memory search": ['apiaryctl memory search "cat name" --limit 3'],
    "memory delete": ["apiaryctl memory delete 7c1e"],
    "completion": [
        "source <(apiaryctl completion bash)      # in ~/.bashrc",
        "source <(apiaryctl completion zsh)       # in ~/.zshrc, after compinit",
        "apiaryctl completion fish | source       # in ~/.config/fish/config.fish",
    ],
    "explain": [
        "apiaryctl explain hive",
        "apiaryctl explain hive.spec.stages",
        "apiaryctl explain agentspec.spec.runtime --recursive",
    ],
    "api-resources": ["apiaryctl api-resources", "apiaryctl api-resources -o wide"],
}


def commands(group: Group, prefix: str = "") -> dict[str, Command]:
    """Every leaf command below ``group``, by its path (``session create``)."""
    out: dict[str, Command] = {}
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(cmd, Group):
            out.update(commands(cmd, path + " "))
        else:
            out[path] = cmd
    return out


def _safe(cmd: Command) -> None:
    if cmd.help:
        cmd.help = escape(cmd.help)
    for param in cmd.params:
        text = getattr(param, "help", None)
        if isinstance(text, str):
            param.help = escape(text)  # type: ignore[attr-defined]


def finish(root: Group) -> None:
    """Escape markup in every help text and append each command's examples."""
    _safe(root)
    for cmd in root.commands.values():
        if isinstance(cmd, Group):
            _safe(cmd)
    for path, cmd in commands(root).items():
        _safe(cmd)
        lines = EXAMPLES.get(path)
        if lines and "Examples:" not in (cmd.help or ""):
            body = "\n".join("  " + escape(line) for line in lines)
            text = (cmd.help or "").rstrip()
            # typer dedents the paragraphs after the first as one block: when the examples are
            # all there is, an empty first line keeps "Examples:" as the margin (column 0)
            gap = "\n\n" if "\n\n" in text else "\n\n\n"
            cmd.help = f"{text}{gap}Examples:\n{body}"

"""The interactive shell (``dicomql shell``): a prompt_toolkit REPL with history, statements that
span lines until a closing ``;``, and completion of keywords, resources, methods, parameters and
columns from the provider registry."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

if TYPE_CHECKING:
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from dicomql.provider.registry import Registry
    from dicomql.session import Session

EXIT_COMMANDS = frozenset({".exit", ".quit", "exit", "quit", "\\q"})
HELP_COMMANDS = frozenset({".help", "help", "\\?"})

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "AS",
    "INSERT", "INTO", "VALUES", "RETURNING", "UPDATE", "SET", "DELETE", "EXEC", "SHOW",
    "SERVICES", "RESOURCES", "METHODS", "DESCRIBE", "EXTENDED", "GROUP", "BY", "ORDER",
    "ASC", "DESC", "LIMIT", "OFFSET", "DISTINCT", "COUNT", "JOIN", "ON", "json_extract",
    "/*+ AWAIT */", "/*+ SHOWRESULTS */",
)  # fmt: skip

# Completion words may carry dots (google.healthcare.x), @ (EXEC params) and hint characters.
_WORD = re.compile(r"[\w.@/*+]+$")

HELP = """\
Statements end with ';' and may span lines. Examples:
  SHOW RESOURCES IN google.healthcare;
  DESCRIBE google.healthcare.dicom_stores;
  SELECT name, labels FROM google.healthcare.dicom_stores
    WHERE projectsId = 'p' AND locationsId = 'l' AND datasetsId = 'd';
Tab completes keywords, resources, methods, parameters and columns. \\x [on|off|auto] sets
expanded display (one block per row; auto: when a table is wider than the terminal).
Ctrl-C cancels a running statement. .exit (or Ctrl-D) leaves."""


def statement_complete(text: str) -> bool:
    """Whether ``text`` is ready to run: a shell command, blank, or ending in ``;`` outside
    strings and comments."""
    from dicomql.errors import SQLSyntaxError
    from dicomql.sql.lexer import CODE, COMMENT, HINT, segments

    stripped = text.strip()
    if not stripped or stripped.lower() in EXIT_COMMANDS | HELP_COMMANDS:
        return True
    if stripped.lower().split()[:1] == ["\\x"]:
        return True
    try:
        pieces = list(segments(text))
    except SQLSyntaxError:
        return False  # an open string or comment: the statement goes on
    for segment in reversed(pieces):
        body = text[segment.start : segment.end]
        if segment.kind in (COMMENT, HINT) or not body.strip():
            continue
        return segment.kind == CODE and body.rstrip().endswith(";")
    return False


class SQLCompleter(Completer):
    """Completes the word before the cursor from keywords and the registry's names."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._words: list[str] | None = None

    def words(self) -> list[str]:
        if self._words is None:
            words: dict[str, None] = dict.fromkeys(KEYWORDS)
            for service in self._registry.services():
                words[service] = None
                for resource in self._registry.resources(service):
                    words[resource.id] = None
                    for method in resource.methods.values():
                        words[f"{resource.id}.{method.name}"] = None
                        for parameter in method.parameters:
                            words[parameter] = None
                            words[f"@{parameter}"] = None
                        for column in resource.fields(method):
                            words[column.name] = None
                            words[f"data__{column.name}"] = None
            self._words = list(words)
        return self._words

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        match = _WORD.search(document.text_before_cursor)
        if match is None:
            return
        word = match.group()
        lowered = word.lower()
        for candidate in self.words():
            if candidate.lower().startswith(lowered) and candidate != word:
                yield Completion(candidate, start_position=-len(word))


def run_shell(
    session: Session,
    *,
    history: Path | None = None,
    input: Input | None = None,
    output: Output | None = None,
) -> None:
    """Read statements and run them until ``.exit``, ``quit`` or end of input.

    An error is printed and the shell goes on; Ctrl-C abandons the statement being typed.
    """
    if input is None and not sys.stdin.isatty():
        # Piped input (`dicomql shell < script.sql`): no prompts or editing, same statements.
        run_lines(session, sys.stdin)
        return
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application.current import get_app
    from prompt_toolkit.filters import Condition
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory

    store: History = InMemoryHistory()
    if history is not None:
        history.parent.mkdir(parents=True, exist_ok=True)
        store = FileHistory(str(history))
    # Enter runs the statement once it is complete; until then it starts a new line.
    multiline = Condition(lambda: not statement_complete(get_app().current_buffer.text))
    prompt: PromptSession[str] = PromptSession(
        history=store,
        completer=SQLCompleter(session.connection.engine.registry),
        complete_while_typing=False,
        multiline=multiline,
        prompt_continuation=lambda width, line, soft: "...> ".rjust(width),
        input=input,
        output=output,
    )
    from prompt_toolkit.patch_stdout import patch_stdout

    # Lines written while the prompt waits (the embedded service's log, a worker's warning) go
    # above the prompt instead of over it.
    with patch_stdout(raw=True):
        while True:
            try:
                text = prompt.prompt("dicomql> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not _handle(session, text):
                break


def _expanded(session: Session, words: list[str]) -> None:
    """``\\x`` toggles expanded display, ``\\x on|off|auto`` sets it (psql's meta-command)."""
    if words and words[0] in ("on", "off", "auto"):
        session.expanded = words[0]
    elif words:
        print("Error: \\x takes on, off or auto", file=session.err)
        return
    else:
        session.expanded = "off" if session.expanded == "on" else "on"
    print(f"Expanded display is {session.expanded}.", file=session.err)


def run_lines(session: Session, lines: Iterable[str]) -> None:
    """Run statements read from ``lines`` as the shell would, without a prompt."""
    buffer: list[str] = []
    for line in lines:
        buffer.append(line.rstrip("\n"))
        text = "\n".join(buffer)
        if not statement_complete(text):
            continue
        buffer.clear()
        if not _handle(session, text):
            return
    if "".join(buffer).strip():
        _handle(session, "\n".join(buffer))


def _handle(session: Session, text: str) -> bool:
    """Run one input; False when it asks to leave."""
    command = text.strip().lower()
    if command in EXIT_COMMANDS:
        return False
    if command in HELP_COMMANDS:
        print(HELP, file=session.out)
    elif command.split()[:1] == ["\\x"]:
        _expanded(session, command.split()[1:])
    elif command:
        session.run_script(text)
    return True

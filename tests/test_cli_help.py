"""`facetraits --help`: user commands apart from maintainer commands, every option's default shown, and an
example for every user command."""

from __future__ import annotations

import argparse
import re

import pytest

from facetraits.cli import MAINTAINER_COMMANDS, build_parser

USER_COMMANDS = ("check-params", "predict", "explain", "weights", "results", "plots")


def _commands() -> dict[str, argparse.ArgumentParser]:
    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subcommands.choices)


def test_top_level_help_lists_user_commands_apart_from_maintainer_commands() -> None:
    text = build_parser().format_help()
    user, maintainer = text.split("user commands:")[1].split("maintainer commands:")
    listed = lambda section: re.findall(r"^\s{2,4}([a-z][a-z-]+)\s", section, re.MULTILINE)  # noqa: E731
    assert listed(user) == list(USER_COMMANDS)
    assert listed(maintainer) == list(MAINTAINER_COMMANDS)
    assert set(_commands()) == {*USER_COMMANDS, *MAINTAINER_COMMANDS}


@pytest.mark.parametrize("name", [*USER_COMMANDS, *MAINTAINER_COMMANDS])
def test_every_option_shows_its_default(name: str) -> None:
    command = _commands()[name]
    text = " ".join(command.format_help().split())
    for action in command._actions:
        if action.default in (None, argparse.SUPPRESS, [], False) or not action.help:
            continue
        shown = str(action.default) if not isinstance(action.default, list) else "default:"
        assert f"(default: {shown})" in text or "default" in action.help, (name, action.dest)


@pytest.mark.parametrize("name", USER_COMMANDS)
def test_every_user_command_has_examples_that_run_it(name: str) -> None:
    epilog = _commands()[name].epilog or ""
    examples = [line.strip() for line in epilog.split("examples:\n", 1)[-1].splitlines()]
    assert epilog.startswith("examples:") and examples
    assert all(f"facetraits {name}" in line for line in examples), examples

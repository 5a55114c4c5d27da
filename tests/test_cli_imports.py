"""The command line starts fast and speaks plainly: building its parser imports nothing
heavy, the names it lists (model kinds, policies) match what they stand for, every
command and flag is explained, and the quiet console keeps costsched's lines only."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from costsched.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "matplotlib", "ray", "numpy", "sklearn", "optuna", "mnist1d")

LOADED_AFTER_PARSER = """
import sys
from costsched.cli.main import build_parser
build_parser().format_help()
print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def test_building_the_parser_imports_no_heavy_module():
    proc = subprocess.run([sys.executable, "-c", LOADED_AFTER_PARSER, *HEAVY], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [], f"`costsched --help` imports {proc.stdout.strip()}"


def test_importing_the_job_config_imports_no_heavy_module():
    code = "import sys, costsched.config.job; print(' '.join(sorted({m.split('.')[0] " \
           "for m in sys.modules} & set(sys.argv[1:]))))"
    proc = subprocess.run([sys.executable, "-c", code, *HEAVY], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [], f"costsched.config.job imports {proc.stdout.strip()}"


def test_config_model_kinds_are_the_model_zoo_builders():
    from costsched.config.job import MODEL_KINDS
    from costsched.training.models import BUILDERS

    assert tuple(BUILDERS) == MODEL_KINDS


def test_every_registered_policy_builds_under_its_name():
    from costsched.policy.registry import ELASTIC, POLICIES, make_policy

    assert set(POLICIES) >= ELASTIC
    for name in POLICIES:
        assert make_policy(name).name == name


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


COMMANDS = ["train", "quickstart", "report", "sweep", "simulate", "scheduler", "profile",
            "submit", "status", "cancel", "logs"]


def test_every_command_is_listed_with_help():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(action.choices) == sorted(COMMANDS)
    assert all(c.help for c in action._choices_actions)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help(command):
    missing = [a.dest for a in subparsers()[command]._actions if not a.help]
    assert not missing, f"`costsched {command}`: no help text for {missing}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_text_shows_no_format_escapes(command):
    text = subparsers()[command].format_help()
    assert "%%" not in text and "%(" not in text


@pytest.mark.parametrize("command", ["train", "quickstart", "sweep"])
def test_commands_that_start_ray_take_verbose(command):
    assert "--verbose" in subparsers()[command].format_help()


def test_simulate_help_names_the_profiles_variable():
    from costsched.sim.profiles import POLLUX_DIR_ENV

    assert POLLUX_DIR_ENV in subparsers()["simulate"].format_help()


def test_quiet_console_keeps_only_costsched_lines_without_the_marker():
    from costsched.ray_layer.console import MARKER, costsched_lines

    forwarded = [
        f"{MARKER}epoch   1  step     50  loss 1.5271",
        "Reporting training result 1: TrainingReport(checkpoint=None, metrics={...})",
        "[2026-11-30 13:01:45,085 E 6771 6829] core_worker.cc:2465: Actor ...",
        f"  self.exclude_resources = exclude_resources  # not {MARKER}at the start",
        f"{MARKER}worker(s) [1] failed; restarting from the latest checkpoint",
    ]
    assert costsched_lines(forwarded) == [
        "epoch   1  step     50  loss 1.5271",
        "worker(s) [1] failed; restarting from the latest checkpoint",
    ]


def test_ray_log_records_lose_their_colour_codes():
    import logging

    from costsched.ray_layer.console import PlainText

    record = logging.LogRecord("ray._private.worker", logging.INFO, __file__, 1,
                               "dashboard at %s%s%s", ("\x1b[1m\x1b[32m", "http://h:8265",
                                                       "\x1b[39m\x1b[22m"), None)
    assert PlainText().filter(record)
    assert record.getMessage() == "dashboard at http://h:8265"

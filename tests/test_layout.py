"""One home per concept, checked on the source: a second home fails these tests."""

from __future__ import annotations

import ast

from tests.conftest import REPO

LEDGER_WRITES = {"start_run", "open_interval", "heartbeat", "close_interval", "finish_run",
                 "resume_run", "close_abandoned_run", "record_target"}


def package_trees() -> list[tuple[str, ast.AST]]:
    return [(path.relative_to(REPO).as_posix(), ast.parse(path.read_text()))
            for path in sorted((REPO / "costsched").rglob("*.py"))]


def test_only_run_accounting_writes_the_ledger():
    offenders = [f"{name}:{node.lineno}: {ast.unparse(node)[:80]}"
                 for name, tree in package_trees()
                 if name not in ("costsched/cost/ledger.py", "costsched/cost/accounting.py")
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                 and node.func.attr in LEDGER_WRITES]
    assert not offenders, "\n".join(offenders)


def test_job_configs_are_built_only_by_parse_job():
    offenders = [f"{name}:{node.lineno}"
                 for name, tree in package_trees() if name != "costsched/config/job.py"
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and node.args
                 and ast.unparse(node.args[0]) == "JobConfig"]
    assert not offenders, offenders


def test_no_class_is_defined_twice_and_no_module_is_too_long():
    homes: dict[str, list[str]] = {}
    for name, tree in package_trees():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                homes.setdefault(node.name, []).append(name)
    assert not {cls: where for cls, where in homes.items() if len(where) > 1}
    long = {path.relative_to(REPO).as_posix(): n for path in (REPO / "costsched").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 440}  # "about 400"
    assert not long, long


PRICE_NAMES = ("usd_per_hour", "usd_per_gpu_hour", "usd_per_accelerator_hour",
               "usd_per_worker_second", "price", "rate")


def _name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_price_arithmetic_lives_in_one_module():
    """Outside cost/prices.py no code multiplies or divides a price: every dollar
    figure comes from a function of that module."""
    offenders = []
    for path in sorted((REPO / "costsched").rglob("*.py")):
        if path.relative_to(REPO).as_posix() == "costsched/cost/prices.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.Mult)
                    and any(_name(side).endswith(PRICE_NAMES) and "usd_per_step" not in
                            _name(side) for side in (node.left, node.right))):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)

"""Mutation testing of the modules that carry the guarantees (``make mutate``), run by hand.

Each target mutates its own files (or only some functions of them) against a fast
selection of the tests that exercise them, in its own work directory
(``.mutate/<target>/``, which mutmut fills with its ``mutants/`` copy), so the targets'
selections and cached results do not disturb one another. mutmut's settings shared by
all targets are in pyproject.toml's ``[tool.mutmut]``; this map adds, per target, what to
mutate and which tests to run. Within a target mutmut runs, for each mutant, only the
selected tests that reached the mutated function.

    python scripts/mutate.py [TARGET ...]        # default: every target, in order
    python scripts/mutate.py --report [TARGET ...]  # the last results, without running

Each run starts afresh. Afterwards ``cd .mutate/<target> && mutmut show <mutant>`` shows a
mutant's diff.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutate"
#: engine-only modules: SQLite is enough and twice as fast; store code runs on both
SQLITE = ["-k", "not postgresql and not cli"]
BOTH = ["-k", "not cli"]
#: mutmut's check that the tests can fail makes every test fail at its start, which
#: leaves the sockets of live servers and proxies to the garbage collector: a warning
#: the project's ``filterwarnings = error`` would turn into a crash of the whole run
UNRAISABLE = ["-p", "no:unraisableexception"]


@dataclass(frozen=True)
class Target:
    files: list[str]
    tests: list[str]
    #: mutant-name globs to run (default: every mutant of ``files``)
    functions: list[str] = field(default_factory=list)


TARGETS: dict[str, Target] = {
    "circuit": Target(
        files=["src/chatsessions/engine/circuit.py"],
        tests=["tests/test_circuit.py",
               "tests/test_guarantees_promises.py::test_open_circuit_is_503_without_calling_the_model",
               *SQLITE],
    ),
    "leases": Target(
        files=["src/chatsessions/engine/leases.py"],
        tests=["tests/test_leases.py", "tests/test_turn_writes.py",
               "tests/test_guarantees_promises.py::test_busy_chat_is_409_chat_busy_with_retry_after",
               "tests/test_holders.py::test_a_chat_held_by_a_process_gone_from_this_host_is_taken_at_once",
               # the leases a database outage left behind (PostgreSQL behind a proxy)
               "tests/test_guarantees_outage.py::test_leases_an_outage_kept_from_being_released_are_released_once_it_is_over",
               "tests/test_guarantees_outage.py::test_a_lease_write_the_outage_hid_is_released_once_it_is_over",
               *UNRAISABLE, *SQLITE],
    ),
    "context": Target(
        files=["src/chatsessions/engine/context.py"],
        tests=["tests/test_context.py", "tests/test_context_budget.py",
               "tests/test_context_policy.py", "tests/test_tool_context.py",
               "tests/test_sessions.py::test_context_trimming_drops_oldest_turns_but_keeps_system_prompt",
               "tests/test_sessions.py::test_a_message_larger_than_the_window_is_refused",
               *SQLITE],
    ),
    "turn_writes": Target(
        files=["src/chatsessions/store/turn_writes.py"],
        tests=["tests/test_turn_writes.py", "tests/test_leases.py", *BOTH],
    ),
    # the turn: the library's tests of turns, replays, failures, summaries, formats, parts
    # and tools, SQLite only (the store's own writes are the turn_writes target); left
    # out, as they reach the turn only on the way to what they test: lease renewal and
    # expiry, busy chats, retries, Retry-After, HTTP and the CLI (about 35 s in all)
    "turn": Target(
        files=["src/chatsessions/engine/turn.py"],
        tests=["tests/test_sessions.py", "tests/test_leases.py",
               "tests/test_guarantees_idempotency.py", "tests/test_guarantees_promises.py",
               "tests/test_context_policy.py", "tests/test_structured_library.py",
               "tests/test_tool_loop.py", "tests/test_routing_endpoints.py",
               "tests/test_tool_history.py::test_a_chat_keeps_its_tool_choice", *UNRAISABLE,
               "-k", " and ".join(["not postgresql", "not cli", "not http",
                                   "not keeps_renewing",
                                   "not lease_period", "not busy_chat_is_409",
                                   "not serving_beyond_loopback", "not retry_meeting",
                                   "not retry_after_is_waited", "not sync_twins",
                                   "not the_migration"])],
    ),
    # idempotency: chat creation's check and request hash, and the store's key statements
    # (the turn's replay of a keyed request is in the "turn" target); the tests that use
    # keys, and those of the chat's fields that creation checks (every test reaches
    # create_chat: running them all for each of its mutants would take hours)
    "idempotency": Target(
        files=["src/chatsessions/_sessions/chats.py", "src/chatsessions/store/sql.py"],
        functions=[
            "chatsessions._sessions.chats.xǁChatMethodsǁcreate_chat__mutmut_*",
            "chatsessions._sessions.chats.x_request_hash__mutmut_*",
            "chatsessions.store.sql.xǁSQLStoreǁcreate_chat__mutmut_*",
            "chatsessions.store.sql.xǁSQLStoreǁchat_by_idempotency_key__mutmut_*",
            "chatsessions.store.sql.xǁSQLStoreǁmessage_by_idempotency_key__mutmut_*",
            "chatsessions.store.sql.xǁSQLStoreǁexpire_idempotency_keys__mutmut_*",
        ],
        tests=["tests/test_guarantees_idempotency.py::test_chat_creation_with_one_key_makes_one_chat",
               "tests/test_guarantees_idempotency.py::test_retries_while_the_first_request_runs_make_one_turn",
               "tests/test_leases.py::test_idempotent_send_runs_once",
               "tests/test_leases.py::test_idempotent_failure_is_replayed_not_rerun",
               "tests/test_leases.py::test_idempotent_chat_creation",
               "tests/test_leases.py::test_expired_idempotency_keys_are_forgotten",
               "tests/test_guarantees_promises.py::test_message_keys_are_scoped_to_their_chat",
               "tests/test_guarantees_promises.py::test_chat_request_hash_covers_every_field",
               "tests/test_guarantees_promises.py::test_keys_are_forgotten_by_sweep_after_their_ttl",
               "tests/test_guarantees_promises.py::test_chat_key_covers_the_context_policy_the_tools_and_the_tool_choice",
               "tests/test_guarantees_promises.py::test_chat_keys_stored_before_policies_and_tools_existed_still_match",
               "tests/test_guarantees_promises.py::test_a_chat_key_and_a_model_name_are_at_most_200_characters",
               "tests/test_guarantees_promises.py::test_expiry_forgets_only_the_keys_older_than_the_cutoff",
               "tests/test_tool_history.py::test_a_chat_keeps_its_tool_choice",
               "tests/test_tool_loop.py::test_chat_tools_async_functions_and_a_tool_that_raises",
               "tests/test_retention.py::test_sweep_deletes_expired_chats_and_their_messages",
               "tests/test_store_ids.py",
               "tests/test_sessions.py::test_create_chat_returns_uuid_and_starts_with_system_prompt",
               "tests/test_sessions.py::test_bad_params_are_refused",
               *UNRAISABLE, *BOTH],
    ),
}


def _pyproject(target: Target) -> str:
    """The project's pyproject.toml with the target's files and tests in ``[tool.mutmut]``."""
    text = (ROOT / "pyproject.toml").read_text()
    header = "[tool.mutmut]\n"
    assert header in text, "pyproject.toml has no [tool.mutmut] table"
    added = (f"only_mutate = {json.dumps(target.files)}\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(target.tests)}\n")
    return text.replace(header, header + added, 1)


def prepare(name: str, target: Target) -> Path:
    """The target's work directory: the sources and tests linked, its own pyproject."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for linked in ("src", "tests"):
        link = work / linked
        if not link.exists():
            link.symlink_to(ROOT / linked, target_is_directory=True)
    (work / "pyproject.toml").write_text(_pyproject(target))
    return work


def run(name: str, target: Target, children: int) -> int:
    work = prepare(name, target)
    # afresh: mutmut keeps verdicts of unchanged functions even when the tests changed
    shutil.rmtree(work / "mutants", ignore_errors=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(children), *target.functions]
    print(f"== {name}: {' '.join(target.files)}", flush=True)
    return subprocess.run(command, cwd=work, env=os.environ | {"PYTHONHASHSEED": "0"},
                          check=False).returncode


def report(name: str, target: Target) -> dict[str, object]:
    """Kill rate and survivors from the target's last run (mutmut's ``.meta`` files)."""
    from mutmut.stats import status_by_exit_code

    work = WORK / name
    counts: Counter[str] = Counter()
    survivors: list[str] = []
    for source in target.files:
        meta = work / "mutants" / (source + ".meta")
        if not meta.exists():
            continue
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in codes.items():
            if target.functions and not any(fnmatch.fnmatch(mutant, pattern)
                                            for pattern in target.functions):
                continue
            status = status_by_exit_code[code]
            counts[status] += 1
            if status not in ("killed", "timeout", "caught by type check"):
                survivors.append(f"{status}: {mutant}")
    tested = sum(counts.values()) - counts["not checked"]
    killed = counts["killed"] + counts["timeout"]
    rate = killed / tested if tested else 0.0
    return {"target": name, "mutants": sum(counts.values()), "killed": killed,
            "rate": round(rate, 3), "counts": dict(counts), "survivors": sorted(survivors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--report", action="store_true", help="print the last results only")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    names = args.targets or list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"no target {', '.join(sorted(unknown))}; there are {', '.join(TARGETS)}")
    failed = 0
    for name in names:
        if not args.report:
            failed |= run(name, TARGETS[name], args.children)
        result = report(name, TARGETS[name])
        print(f"{name}: {result['killed']}/{result['mutants']} killed ({result['rate']:.1%}) "
              f"{result['counts']}")
        for line in result["survivors"]:  # type: ignore[attr-defined]
            print(f"    {line}")
    return failed


if __name__ == "__main__":
    raise SystemExit(main())

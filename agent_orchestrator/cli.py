"""Command line: `agent-orchestrator [init|start|run|status]`. main(argv) -> exit code; errors are
rendered here, once, as one or two plain lines (a traceback only with --debug or AO_DEBUG=1)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .errors import OrchestratorError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
COMMANDS = ("init", "start", "run", "status")
DEFAULT_PORT = 3001


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-orchestrator",
        description="Run AI coding agent CLIs in parallel git worktrees over a features.json "
                    "backlog: implement, merge, verify, fix. No command means `start`.")
    parser.add_argument("--version", action="version", version=f"agent-orchestrator {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and debug logs (also AO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="{init,start,run,status}")

    def project_arg(p):
        p.add_argument("--project", metavar="DIR",
                       help="the project's directory (default: $PROJECT_ROOT, else the current "
                            "directory)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)

    p_init = sub.add_parser("init", help="detect the project and write orchestrator.config.json")
    project_arg(p_init)
    p_init.add_argument("--yes", "-y", action="store_true",
                        help="accept every default without asking")
    from .init_flags import INIT_FLAGS
    for flag in INIT_FLAGS:
        flag.add_to(p_init)

    p_start = sub.add_parser("start", help="run the daemon: orchestrator, dashboard and API")
    project_arg(p_start)
    p_start.add_argument("--port", type=int, metavar="N",
                         help=f"HTTP port (default: $PORT, else {DEFAULT_PORT}; 0 picks a free one)")
    p_start.add_argument("--host", default="127.0.0.1",
                         help="address to bind (default 127.0.0.1; anything else requires the "
                              "token on every request)")
    p_start.add_argument("--autostart", action="store_true",
                         help="start processing at once instead of waiting for Start")

    p_run = sub.add_parser("run", help="process the open features headlessly, then exit")
    project_arg(p_run)
    p_run.add_argument("--feature", type=int, action="append", metavar="ID", dest="features",
                       help="only this feature (repeatable)")
    p_run.add_argument("--track", action="append", metavar="NAME", dest="tracks",
                       help="only this track (repeatable)")
    p_run.add_argument("--json", action="store_true",
                       help="one JSON object per line instead of text")

    p_status = sub.add_parser("status", help="features by status, tracks, sessions and cost")
    project_arg(p_status)
    p_status.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in COMMANDS for a in argv) and not any(a in ("-h", "--help", "--version")
                                                        for a in argv):
        argv = ["start", *argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    debug = bool(getattr(args, "debug", False)) or os.environ.get("AO_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMAND_FUNCS[args.command](args)
    except OrchestratorError as exc:
        if debug:
            raise
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}\nhint: rerun with --debug for the "
              "traceback, and please report it", file=sys.stderr)
        return EXIT_BUG


def project_root(args) -> Path:
    return Path(args.project or os.environ.get("PROJECT_ROOT") or os.getcwd())


def port_from(args) -> int:
    if args.port is not None:
        return args.port
    value = os.environ.get("PORT")
    if value is None:
        return DEFAULT_PORT
    try:
        port = int(value)
    except ValueError:
        raise UsageError(f"PORT={value!r} is not a port number", "set PORT to e.g. 3001")
    return port


# ---------------------------------------------------------------------------- commands
def cmd_init(args) -> int:
    from .init_wizard import INIT_FLAGS, run_init
    answers = {flag.dest: getattr(args, flag.dest, None) for flag in INIT_FLAGS}
    return run_init(project_root(args), answers, assume_yes=args.yes)


def cmd_start(args) -> int:
    from .daemon import run_daemon
    port = port_from(args)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range", "use a port from 1 to 65535 (0: any)")
    return run_daemon(project_root(args), host=args.host, port=port, autostart=args.autostart)


def cmd_run(args) -> int:
    from .notify import Notifier
    from .orchestrator import Orchestrator
    from .project import Project
    project = Project.open(project_root(args), command="run")
    try:
        for warning in project.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        known = {f.id for f in project.store.load()}
        missing = [i for i in args.features or [] if i not in known]
        if missing:
            raise UsageError(f"--feature {', '.join(map(str, missing))}: no such feature id in "
                             f"{project.config['featuresFile']}", "see `agent-orchestrator status`")
        unknown = [t for t in args.tracks or [] if t not in {t.name for t in project.config.tracks}]
        if unknown:
            raise UsageError(f"--track {', '.join(unknown)}: no such track",
                             "tracks are defined in orchestrator.config.json")
        orch = Orchestrator(project)
        printer = EventPrinter(project.bus, as_json=args.json)
        notifier = Notifier(project.bus, project.config,
                            project_name=project.config["projectName"])
        printer.start()
        notifier.start()
        try:
            summary, interrupted = _run_with_signals(orch, args.features, args.tracks)
        finally:
            printer.stop()
            notifier.close()
        _print_summary(summary, as_json=args.json)
        if interrupted:
            return EXIT_INTERRUPTED
        if summary["failed"] or summary["paused_tracks"] or summary["blocked"]:
            return EXIT_FAILED
        return EXIT_OK
    finally:
        project.close()


def _run_with_signals(orch, features, tracks) -> tuple[dict, bool]:
    interrupted = False

    async def main() -> dict:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            nonlocal interrupted
            if interrupted:  # second Ctrl-C: end the agents now and leave
                orch.kill_now()
                os._exit(EXIT_INTERRUPTED)
            interrupted = True
            print("\nstopping: ending the agents and recording their work "
                  "(Ctrl-C again to quit at once)", file=sys.stderr)
            asyncio.ensure_future(orch.stop())

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        return await orch.run_until_idle(feature_ids=features, track_names=tracks)

    summary = asyncio.run(main())
    return summary, interrupted


def cmd_status(args) -> int:
    from .status import collect_status, render_status
    info = collect_status(project_root(args))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(render_status(info))
    return EXIT_OK


COMMAND_FUNCS = {"init": cmd_init, "start": cmd_start, "run": cmd_run, "status": cmd_status}


# ---------------------------------------------------------------------------- output of `run`
class EventPrinter:
    """Prints one line per phase change, status change, merge and notice while `run` works."""

    TYPES = ("track", "feature", "merge", "notice", "check")

    def __init__(self, bus, *, as_json: bool, out=None):
        self.sub = bus.subscribe()
        self.as_json = as_json
        self.out = out or sys.stdout
        self._stop = threading.Event()
        self._ready = threading.Event()  # set by the bus when events arrive (and by stop)
        self._thread = threading.Thread(target=self._loop, name="event-printer", daemon=True)

    def start(self) -> None:
        self.sub.set_on_ready(self._ready.set)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._ready.set()
        self._thread.join(timeout=5)
        self._drain()
        self.sub.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._ready.wait()
            self._ready.clear()
            self._drain()

    def _drain(self) -> None:
        try:
            events = self.sub.poll()
        except Exception:
            return
        for event in events:
            if event.type not in self.TYPES:
                continue
            line = format_event(event, as_json=self.as_json)
            if line:
                print(line, file=self.out, flush=True)


def format_event(event, *, as_json: bool) -> str | None:
    data = event.data
    if as_json:
        return json.dumps({"id": event.id, "ts": event.ts, "type": event.type, **data},
                          default=str)
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
    if event.type == "track":
        if data.get("feature_id") is None or data.get("phase") in (None, "idle"):
            return None
        agent = f" ({data['agent']})" if data.get("agent") and data.get("phase") in (
            "implementing", "fixing") else ""
        return (f"{stamp} [{data['name']}] #{data['feature_id']} {data.get('feature_name')}: "
                f"{data['phase']}{agent}")
    if event.type == "feature":
        if data.get("status") not in ("passed", "failed", "blocked"):
            return None
        reason = f" — {data['failure_reason']}" if data.get("failure_reason") else ""
        return f"{stamp} feature #{data['id']} {data['status'].upper()}{reason}"
    if event.type == "merge":
        if data.get("result") == "merged":
            return f"{stamp} merged {data['branch']} into {data['base']}"
        return f"{stamp} merge of {data['branch']}: {data['result']} ({', '.join(data['files'])})"
    if event.type == "check":
        return (f"{stamp} check #{data['feature_id']}: {' '.join(data['argv'])} -> "
                f"exit {data['exit_code']}")
    return f"{stamp} {data.get('level', 'notice')}: {data.get('message')}"


def _print_summary(summary: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"type": "summary", **summary}, default=str))
        return
    print(f"done: {len(summary['passed'])} passed, {len(summary['failed'])} failed"
          + (f", {len(summary['blocked'])} blocked" if summary["blocked"] else ""))
    for name, reason in summary["paused_tracks"].items():
        print(f"track {name} is paused: {reason}")

"""`projectionist ui`: the Dagster UI with the CLI's configuration, on 127.0.0.1 only.

`dagster dev` starts five Python processes that each import Dagster (2-5 s of CPU each), three one after
another (itself, a code-server proxy, the proxy's child that loads the definitions), then the webserver and
the daemon together. On two cores that was 15-17 s before the page showed the assets. Here a light supervisor
(``python -m pipelines.ui``, no Dagster import) starts one code server that loads the definitions in its own
process (`dagster api grpc` on a Unix socket) and the webserver at the same time: the webserver imports while
the definitions load, and waits for the code server's answer before it reads the workspace, so it serves with
the location loaded. The daemon (queued runs, schedules, sensors) starts once the code server is up, on the
core the code server leaves while the webserver still imports, so it does not slow the code server down and is
ready for the first run. A code server that exits is started again, as `dagster dev` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eventstore.settings import Settings

__all__ = ["dagster_env", "dagster_home", "free_port", "start_ui", "stop_process_group", "wait_for_code_server"]

#: The code location's name: the one `dagster dev -m pipelines.definitions` gave it, so the runs, schedules
#: and sensors an instance already holds stay attached to it.
LOCATION = "pipelines.definitions"


def _instance_template() -> Path:
    # The repository's dagster.yaml (editable install), or the copy packed into the wheel.
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "dagster.yaml", here / "dagster.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("dagster.yaml is missing from the installation; reinstall projectionist")


def dagster_home(settings: Settings) -> Path:
    """``$PROJECTIONIST_HOME/dagster``, holding the instance's dagster.yaml and its storage."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = _instance_template()
    if not target.exists() or target.read_bytes() != template.read_bytes():
        shutil.copyfile(template, target)
    return home


def dagster_env(settings: Settings) -> dict[str, str]:
    """The environment for Dagster processes: the same settings as the CLI, explicit."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    env["PROJECTIONIST_HOME"] = str(settings.home)
    optional = {
        "PROJECTIONIST_EVENT_STORE_DSN": settings.event_store_dsn,
        "PROJECTIONIST_LAKE": settings.lake,
        "PROJECTIONIST_LAKE_DATA": settings.lake_data,
    }
    env.update({k: v for k, v in optional.items() if v})
    env["PROJECTIONIST_EVENT_STORE_KIND"] = settings.store_kind
    env["PROJECTIONIST_EVENT_STORE_SCHEMA"] = settings.store_schema
    env["PROJECTIONIST_EVENT_STORE_TABLE"] = settings.store_table
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ui(settings: Settings, port: int, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the Dagster UI on 127.0.0.1:port in a new process group; return its supervisor process."""
    output = open(log, "ab") if log else None  # noqa: SIM115  handed to the child, closed here below
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.ui", str(port)],
            env=dagster_env(settings),
            # In the Dagster home: a dagster.yaml in the folder Dagster starts in (the repository's) would make
            # it warn that the file "will not be used", though the instance uses the same file, copied.
            cwd=dagster_home(settings),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # its own process group: stopping it stops every child
            # A shell starts background jobs with SIGINT ignored, and children inherit that; restore the defaults.
            preexec_fn=_default_signals,
        )
    finally:
        if output is not None:
            output.close()  # the child has its own descriptor


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a process started by :func:`start_ui` and all its children, by its PID."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def wait_for_code_server(path: str, timeout: float = 180.0) -> None:
    """Wait until the code server on the Unix socket ``path`` answers (its definitions are loaded then)."""
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(socket=path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping("")
            return
        except DagsterUserCodeUnreachableError:
            time.sleep(0.1)
    # Go on: the webserver then shows the location's error, and the code server's output says why.


#: A Dagster entry point (module argv[2]) that waits, once imported, for the code server on the socket argv[1]:
#: the webserver and the daemon read the workspace once at start and do not retry a code server not up yet.
#: It also leaves the first opening of a fresh instance to the code server alone: processes creating its SQLite
#: storage at once fail ("table secondary_indexes already exists", seen with the daemon started at once).
_AFTER_CODE_SERVER = (
    "import importlib, sys; from pipelines.ui import wait_for_code_server; "
    "socket, module = sys.argv.pop(1), sys.argv.pop(1); main = importlib.import_module(module).main; "
    "wait_for_code_server(socket); main()"
)


class _Supervisor:
    """The processes of one UI: code server, webserver, daemon; run in the Dagster home by :func:`start_ui`."""

    def __init__(self, port: int, scratch: Path) -> None:
        self.port = port
        self.socket = str(scratch / "code-server.sock")
        self.workspace = scratch / "workspace.yaml"
        entry = {"location_name": LOCATION, "socket": self.socket, "additional_metadata": {"module_name": LOCATION}}
        self.workspace.write_text(json.dumps({"load_from": [{"grpc_server": entry}]}))  # JSON is YAML
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        after_code_server = ["-c", _AFTER_CODE_SERVER, self.socket]
        commands = {
            "code server": [
                *("-m", "dagster", "api", "grpc", "--socket", self.socket, "--location-name", LOCATION),
                # A definitions module that fails to import shows its error in the UI instead of ending the server.
                *("--lazy-load-user-code", "--log-level", "warning", "-m", LOCATION, "-d", os.getcwd()),
            ],
            "webserver": [
                *(*after_code_server, "dagster_webserver.cli", "-h", "127.0.0.1", "-p", str(self.port)),
                *("-w", str(self.workspace), "--dagster-log-level", "info"),
            ],
            "daemon": [*after_code_server, "dagster._daemon.cli", "run", "-w", str(self.workspace)],
        }
        self.processes[name] = subprocess.Popen([sys.executable, *commands[name]])

    def run(self) -> int:
        """Start everything, restart a code server that exits; the exit code of a webserver or daemon that ends."""
        self.start("code server")
        self.start("webserver")
        # The daemon once the code server is up, when its import no longer slows the code server's (the
        # webserver imports longer): on two cores it then takes the core the code server leaves.
        while not os.path.exists(self.socket):
            if (ended := self.ended()) is not None:
                return ended
            time.sleep(0.1)
        self.start("daemon")
        while (ended := self.ended()) is None:
            time.sleep(1)
        return ended

    def ended(self) -> int | None:
        code_server = self.processes["code server"]
        if code_server.poll() is not None:
            print(f"the code server ended with exit code {code_server.returncode}; starting it again", file=sys.stderr)
            self.start("code server")  # the webserver and the daemon watch it and reload the location
        for name in ("webserver", "daemon"):
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                print(f"the Dagster {name} ended with exit code {process.returncode}", file=sys.stderr)
                return process.returncode or 1
        return None

    def stop(self) -> None:
        """Stop every process: a stop by process group already reached them; a signal to this process alone did not."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        # Stopped by their process group, they end within 2-4 s; a second signal would interrupt their shutdown.
        deadline = time.monotonic() + 5
        while any(p.poll() is None for p in self.processes.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()  # Dagster's processes take SIGTERM as they take Ctrl-C
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(port: int) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    os.environ["DAGSTER_IS_DEV_CLI"] = "1"  # Dagster's short error messages of a local deployment, as `dagster dev`
    # The socket and workspace file in a private folder of their own: another UI on the same home has its own.
    with tempfile.TemporaryDirectory(prefix="projectionist-ui-") as scratch:
        supervisor = _Supervisor(port, Path(scratch))
        try:
            return supervisor.run()
        except KeyboardInterrupt:
            return 0
        finally:
            supervisor.stop()


if __name__ == "__main__":
    sys.exit(_supervise(int(sys.argv[1])))

"""`projectionist ui`: the Dagster UI with the CLI's configuration, on 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from eventstore.settings import Settings

__all__ = ["dagster_env", "dagster_home", "free_port", "start_dagster_dev", "stop_process_group"]


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


#: ``python -m dagster`` without its SupersessionWarning: `dagster dev` still works and is what this runs
#: (`dg dev` needs a dg project layout Projectionist does not have), so the warning only confuses.
_DAGSTER_MAIN = (
    "import warnings; from dagster_shared.utils.warnings import SupersessionWarning; "
    "warnings.filterwarnings('ignore', category=SupersessionWarning); "
    "from dagster._cli import main; main()"
)


def start_dagster_dev(settings: Settings, port: int, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``dagster dev`` on 127.0.0.1:port in a new process group; return the process."""
    command = [
        sys.executable,
        "-c",
        _DAGSTER_MAIN,
        "dev",
        "-m",
        "pipelines.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    output = open(log, "ab") if log else None  # noqa: SIM115  handed to the child, closed here below
    try:
        return subprocess.Popen(
            command,
            env=dagster_env(settings),
            # In the Dagster home: a dagster.yaml in the folder it starts in (the repository's) would make
            # Dagster warn that it "will not be used", though the instance uses the same file, copied.
            cwd=dagster_home(settings),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # its own process group: stopping it stops every child
            # dagster dev ignores SIGTERM when its parent blocked signals; restore the defaults.
            preexec_fn=_default_signals,
        )
    finally:
        if output is not None:
            output.close()  # the child has its own descriptor


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a process started by :func:`start_dagster_dev` and all its children, by its PID."""
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

"""Where a study lives, opened before any trial runs so that a wrong URL costs one message.

- ``sqlite:///PATH`` (the default, ``<sweep dir>/optuna.db``): one machine. Its folder is made
  when it is the sweep dir (which Hydra would only make at the first launch); any other
  folder must exist, so a mistyped resume path is not silently a new, empty study.
- any other SQLAlchemy URL (``postgresql://user:pw@host/db``, ``mysql+pymysql://…``): many
  processes on many machines.
- ``journal:PATH``: Optuna's journal file (append-only, file-locked), for trials on several
  machines that share a filesystem but no database.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

from cifar_lightning.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL = "journal:"
# A server that does not answer must not hang the sweep for minutes.
CONNECT_TIMEOUT_S = 10
DRIVERS = {"postgresql": "'psycopg[binary]'", "mysql": "pymysql (and mysql+pymysql://…)"}


def journal_path(url: str) -> Path | None:
    """``journal:/nfs/study.log`` or ``journal:///nfs/study.log`` -> the file."""
    if not url.startswith(JOURNAL):
        return None
    rest = url.removeprefix(JOURNAL)
    return Path(rest[2:] if rest.startswith("//") else rest)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///…`` URL (None for other URLs and in-memory SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def default_url(sweep_dir: Path | None) -> str:
    """``sqlite:///<sweep dir>/optuna.db``: the study beside the trials it ran."""
    return f"sqlite:///{Path(sweep_dir or '.') / 'optuna.db'}"


def open_storage(url: str | None, sweep_dir: Path | None = None) -> BaseStorage:
    """The storage ``url`` names, reachable and with Optuna's tables; a ConfigError if not.
    A SQLite or journal file in ``sweep_dir`` gets its folder made."""
    url = str(url or default_url(sweep_dir))
    fix = "check the URL, that the server runs and lets this machine in"
    try:
        if (path := journal_path(url)) is not None:
            _ensure_folder(path, sweep_dir, url)
            return JournalStorage(JournalFileBackend(str(path)))
        if (path := sqlite_path(url)) is not None:
            _ensure_folder(path, sweep_dir, url)
            fix = "check that the file is an Optuna database and can be written"
        return _rdb_storage(url)
    except ConfigError:
        raise
    except ArgumentError as e:
        raise ConfigError(
            f"hydra.sweeper.storage={shown(url)} is not a storage URL ({_first_line(e)}).",
            "use sqlite:///PATH, a SQLAlchemy URL such as postgresql://user:pw@host/db, or "
            "journal:PATH",
        ) from None
    except ImportError as e:  # Optuna wraps the driver's ModuleNotFoundError
        missing = e if isinstance(e, ModuleNotFoundError) else e.__cause__
        name = getattr(missing, "name", None) or "its driver"
        backend = url.split(":", 1)[0].split("+", 1)[0]
        raise ConfigError(
            f"hydra.sweeper.storage={shown(url)} needs the database driver {name!r}, which "
            "is not installed.",
            f"pip install {DRIVERS.get(backend, name)}",
        ) from None
    except (SQLAlchemyError, OSError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"cannot reach the study's storage {shown(url)}: {_first_line(e)}", fix
        ) from None


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """Optuna's tables made on first use. Workers started together on a new database race
    to make them; the loser's CREATE fails on a name the winner just took (PostgreSQL:
    duplicate key in pg_type), and its next try finds the tables there."""
    for attempt in range(attempts):
        try:
            return RDBStorage(_with_driver(url), engine_kwargs=_engine_kwargs(url))
        except (IntegrityError, ProgrammingError) as e:  # duplicate key; table exists
            lost_race = any(m in str(e) for m in ("duplicate key", "already exists"))
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _ensure_folder(path: Path, sweep_dir: Path | None, url: str) -> None:
    folder = path.resolve().parent
    if folder.is_dir():
        return
    if sweep_dir is not None and folder == Path(sweep_dir).resolve():
        folder.mkdir(parents=True, exist_ok=True)
        return
    raise ConfigError(
        f"cannot reach the study's storage {shown(url)}: the folder {folder} does not exist.",
        "check the path (to continue a search, point at the optuna.db of its sweep dir)",
    )


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy 2.0 and psycopg (3) to 2.1: name the
    one we install (the ``postgres`` extra) when the URL names none."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    if backend == "mysql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def shown(url: str) -> str:
    """The URL with its password hidden: messages end up in logs."""
    if url.startswith(JOURNAL):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""The run store: one SQLite file per run folder holding everything a run measured.

Conventions:
- ``round`` counts training rounds from 1 (a centralized run's epochs are its rounds).
- ``model_round`` names the global model that was evaluated: 0 is the initial model,
  r is the model after round r's aggregation. In round r every site validates model r-1
  before training, so validation rows of round r carry ``model_round = r - 1``.
- ``validation`` rows are summaries (mean, std, n) of per-case metrics: what a site may
  share. ``case_metrics`` rows (one value per case) are written only by a site's own
  local store or by a centralized run; the federation's store never holds them.
- Status values and meta keys are the run folder's contract (``fedseg.run_folder``): the
  ``rounds`` and ``site_rounds`` tables accept only ``RoundStatus``/``SiteRoundStatus``
  values, and ``store.meta`` reads and writes each meta key with its type.
- ``checkpoints`` lists the model files a run holds now: model retention (plan
  ``retention``) removes the row of a round whose model file it deletes.
- ``cross_validation`` rows are cross-site evidence: site ``eval_site`` validated the local
  model that ``model_site`` trained in round ``model_round``, in round ``round``, paired
  with the global model ``reference_round`` on the same cases. ``metric`` ``dice`` is the
  local model's summary, ``dice_diff`` the paired per-case difference (local - global).
  ``eval_site == model_site`` is the site's own (home) check of its fresh local model
  against the model it started from (``reference_round = model_round - 1``, evaluated in
  the same round); ``eval_site != model_site`` is an away check, made in round
  ``model_round + 1`` against ``reference_round = model_round`` (the aggregate).
  ``without_dice`` and ``without_dice_diff`` are the same for the round's model *without*
  ``model_site``'s update (plan ``cross_site.leave_one_out``), paired with that aggregate.
- ``alarms`` rows have a ``level`` (``run_folder.AlarmLevel``) and their ``evidence``
  (``run_folder.AlarmEvidence`` as JSON; NULL in stores written before it existed).
- Metrics are lower-case names (``dice``, ``jaccard``, ``hd95``, ``sensitivity``,
  ``specificity``, ``loss``); regions are ``ET``, ``TC``, ``WT`` or ``mean``.

WAL mode lets ``fedseg status`` read while a run writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedseg.model.summary import Summary
from fedseg.run_folder import (
    STORE_FILE,
    AlarmEvidence,
    AlarmLevel,
    ComputeUsed,
    MetaKey,
    PrivacySpent,
    RoundStatus,
    RunMeta,
    SiteRoundStatus,
)


def _one_of(column: str, values: type[StrEnum]) -> str:
    """A CHECK constraint keeping ``column`` to the enum's values."""
    return f"CHECK ({column} IN ({', '.join(repr(v.value) for v in values)}))"


SITE_ROUNDS = f"""
CREATE TABLE IF NOT EXISTS site_rounds (
    round INTEGER NOT NULL,
    site TEXT NOT NULL,
    status TEXT NOT NULL {_one_of("status", SiteRoundStatus)},
    n_train INTEGER,
    n_val INTEGER,
    train_loss REAL,
    wall_s REAL,
    bytes_sent INTEGER,                -- aggregator -> site
    bytes_received INTEGER,            -- site -> aggregator
    update_norm REAL,                  -- L2 norm of (site weights - global weights)
    update_distance REAL,              -- L2 distance of the site's weights to the aggregate
    error TEXT,
    extra TEXT,                        -- JSON for plan-specific values
    PRIMARY KEY (round, site)
);
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    status TEXT NOT NULL {_one_of("status", RoundStatus)},
    started REAL NOT NULL,
    finished REAL,
    wall_s REAL,
    n_sites INTEGER,                   -- sites whose update was aggregated
    note TEXT
);
{SITE_ROUNDS}
CREATE TABLE IF NOT EXISTS validation (
    model_round INTEGER NOT NULL,
    site TEXT NOT NULL,
    region TEXT NOT NULL,
    metric TEXT NOT NULL,
    mean REAL NOT NULL,
    std REAL NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (model_round, site, region, metric)
);
CREATE TABLE IF NOT EXISTS case_metrics (
    model_round INTEGER NOT NULL,
    site TEXT NOT NULL,
    case_id TEXT NOT NULL,
    region TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (model_round, site, case_id, region, metric)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    model_round INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    site TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL,
    level TEXT NOT NULL DEFAULT 'alarm' {_one_of("level", AlarmLevel)},
    evidence TEXT,                     -- run_folder.AlarmEvidence as JSON
    UNIQUE (round, site, kind)
);
CREATE TABLE IF NOT EXISTS cross_validation (
    round INTEGER NOT NULL,            -- the round the validation was made in
    model_site TEXT NOT NULL,          -- whose local model
    model_round INTEGER NOT NULL,      -- the round that local model was trained in
    eval_site TEXT NOT NULL,           -- whose validation cases
    reference_round INTEGER NOT NULL,  -- the global model it is paired with
    region TEXT NOT NULL,
    metric TEXT NOT NULL,              -- dice (the local model) or dice_diff (local - global)
    mean REAL NOT NULL,
    std REAL NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (model_site, model_round, eval_site, region, metric)
);
CREATE TABLE IF NOT EXISTS privacy_ledger (
    round INTEGER NOT NULL,
    site TEXT NOT NULL,
    level TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    sigma REAL NOT NULL,
    clip_norm REAL NOT NULL,
    steps INTEGER NOT NULL,
    sample_rate REAL NOT NULL,
    accountant TEXT NOT NULL,
    PRIMARY KEY (round, site)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SiteRound:
    """What one site did in one round (no per-case values)."""

    round: int
    site: str
    status: SiteRoundStatus
    n_train: int | None = None
    n_val: int | None = None
    train_loss: float | None = None
    wall_s: float | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    update_norm: float | None = None
    update_distance: float | None = None
    error: str | None = None
    extra: dict[str, Any] | None = None

    @property
    def compute(self) -> ComputeUsed | None:
        """The device and precision the site used (None: not recorded, e.g. it failed)."""
        return ComputeUsed.from_extra(self.extra)


@dataclass(frozen=True)
class ValidationRow:
    model_round: int
    site: str
    region: str
    metric: str
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Alarm:
    """One alarm or observation about ``site`` after round ``round``."""

    round: int
    site: str
    kind: str
    message: str
    level: AlarmLevel = AlarmLevel.ALARM
    evidence: AlarmEvidence | None = None


#: the metrics of ``cross_validation`` rows
CROSS_DICE = "dice"
CROSS_DICE_DIFF = "dice_diff"
#: the prefix of a metric measured on the round's model without the model site
#: (``run_folder.cross_label(without=True)``) instead of its local model
WITHOUT_PREFIX = "without_"
#: Dice of the round's model without the site minus the global model's, paired per case
WITHOUT_DICE_DIFF = WITHOUT_PREFIX + CROSS_DICE_DIFF


def without_metric(metric: str) -> str:
    """The name a cross-site ``metric`` is stored under when measured on the round's model
    without the model site."""
    return WITHOUT_PREFIX + metric


@dataclass(frozen=True)
class CrossRow:
    """One summary of cross-site evidence (see the module docstring): ``summary`` over the
    ``eval_site``'s validation cases of ``metric`` in ``region``."""

    round: int
    model_site: str
    model_round: int
    eval_site: str
    reference_round: int
    region: str
    metric: str
    summary: Summary

    @property
    def home(self) -> bool:
        """The site's own check of its local model (not another site's data)."""
        return self.model_site == self.eval_site


class RunStore:
    """Read/write access to ``<run>/run.sqlite``. Each write is its own transaction.
    ``path`` is the run folder (made when missing) or the store file itself (``*.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        # a folder not made yet is a folder too: never a database file named like the run
        if path.is_dir() or (path.suffix != Path(STORE_FILE).suffix and not path.is_file()):
            path = path / STORE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions added to a store written by an earlier one, and
        widen the ``site_rounds`` status check to the statuses added since (a table is
        rebuilt: SQLite cannot alter a CHECK)."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'site_rounds'"
        ).fetchone()
        if row and any(repr(v.value) not in row[0] for v in SiteRoundStatus):
            with self._tx():
                self._db.execute("ALTER TABLE site_rounds RENAME TO site_rounds_before")
                self._db.execute(SITE_ROUNDS)
                self._db.execute("INSERT INTO site_rounds SELECT * FROM site_rounds_before")
                self._db.execute("DROP TABLE site_rounds_before")
        have = self._columns("alarms")
        if "level" not in have:
            self._db.execute("ALTER TABLE alarms ADD COLUMN level TEXT NOT NULL DEFAULT 'alarm'")
        if "evidence" not in have:
            self._db.execute("ALTER TABLE alarms ADD COLUMN evidence TEXT")

    def _columns(self, table: str) -> set[str]:
        """The column names of ``table`` (empty: no such table)."""
        return {r[1] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------
    @property
    def meta(self) -> RunMeta:
        """Typed access to the meta keys (``fedseg.run_folder.RunMeta``)."""
        return RunMeta(self)

    def set_meta(self, key: MetaKey, value: Any) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (MetaKey(key).value, json.dumps(value)),
        )

    def get_meta(self, key: MetaKey, default: Any = None) -> Any:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (MetaKey(key).value,)
        ).fetchone()
        return json.loads(row[0]) if row else default

    # -- rounds -----------------------------------------------------------------------
    def start_round(self, rnd: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rounds (round, status, started) VALUES (?, ?, ?)",
            (rnd, RoundStatus.RUNNING.value, time.time()),
        )

    def finish_round(
        self,
        rnd: int,
        *,
        status: RoundStatus = RoundStatus.DONE,
        n_sites: int | None = None,
        note: str = "",
    ) -> None:
        now = time.time()
        self._db.execute(
            "UPDATE rounds SET status = ?, finished = ?, wall_s = ? - started, n_sites = ?, "
            "note = ? WHERE round = ?",
            (RoundStatus(status).value, now, now, n_sites, note, rnd),
        )

    def last_done_round(self) -> int:
        """The highest round whose status is ``done``; 0 if none."""
        row = self._db.execute(
            "SELECT MAX(round) FROM rounds WHERE status = ?", (RoundStatus.DONE.value,)
        ).fetchone()
        return int(row[0] or 0)

    def rounds(self) -> list[dict[str, Any]]:
        """Rows of the ``rounds`` table as dicts (``status`` a ``RoundStatus``)."""
        cur = self._db.execute("SELECT * FROM rounds ORDER BY round")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for row in rows:
            row["status"] = RoundStatus(row["status"])
        return rows

    def discard_after(self, rnd: int) -> None:
        """Forget every record of rounds after ``rnd`` (used when resuming after a crash)."""
        with self._tx():
            self._db.execute("DELETE FROM rounds WHERE round > ?", (rnd,))
            self._db.execute("DELETE FROM site_rounds WHERE round > ?", (rnd,))
            self._db.execute("DELETE FROM validation WHERE model_round > ?", (rnd,))
            self._db.execute("DELETE FROM case_metrics WHERE model_round > ?", (rnd,))
            self._db.execute("DELETE FROM checkpoints WHERE model_round > ?", (rnd,))
            self._db.execute("DELETE FROM alarms WHERE round > ?", (rnd,))
            self._db.execute("DELETE FROM privacy_ledger WHERE round > ?", (rnd,))
            self._db.execute("DELETE FROM cross_validation WHERE round > ?", (rnd,))

    # -- privacy ----------------------------------------------------------------------
    def record_privacy(self, rnd: int, site: str, spent: PrivacySpent) -> None:
        """The ε ``site`` has spent in total after round ``rnd`` (``run_folder.PrivacySpent``)."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO privacy_ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
                (rnd, site, spent.level, spent.epsilon, spent.delta, spent.sigma,
                 spent.clip_norm, spent.steps, spent.sample_rate, spent.accountant),
            )  # fmt: skip

    def privacy_ledger(self, site: str | None = None) -> list[tuple[int, str, PrivacySpent]]:
        """(round, site, spent) rows by round then site; only ``site``'s when given."""
        q = "SELECT * FROM privacy_ledger" + (" WHERE site = ?" if site else "")
        rows = self._db.execute(q + " ORDER BY round, site", (site,) if site else ()).fetchall()
        fields = ("level", "epsilon", "delta", "sigma", "clip_norm", "steps", "sample_rate",
                  "accountant")  # fmt: skip
        return [
            (int(r[0]), str(r[1]), PrivacySpent(**dict(zip(fields, r[2:], strict=True))))
            for r in rows
        ]

    # -- sites ------------------------------------------------------------------------
    def record_site_round(self, sr: SiteRound) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO site_rounds VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                sr.round, sr.site, SiteRoundStatus(sr.status).value, sr.n_train, sr.n_val,
                sr.train_loss, sr.wall_s,
                sr.bytes_sent, sr.bytes_received, sr.update_norm, sr.update_distance, sr.error,
                json.dumps(sr.extra) if sr.extra is not None else None,
            ),
        )  # fmt: skip

    def site_rounds(self, site: str | None = None) -> list[SiteRound]:
        q = "SELECT * FROM site_rounds" + (" WHERE site = ?" if site else "")
        rows = self._db.execute(q + " ORDER BY round, site", (site,) if site else ()).fetchall()
        out = []
        for r in rows:
            extra = json.loads(r[12]) if r[12] else None
            out.append(SiteRound(r[0], r[1], SiteRoundStatus(r[2]), *r[3:12], extra=extra))
        return out

    def sites(self) -> list[str]:
        rows = self._db.execute(
            "SELECT site FROM site_rounds UNION SELECT site FROM validation ORDER BY site"
        ).fetchall()
        return [r[0] for r in rows]

    # -- metrics ----------------------------------------------------------------------
    def record_validation(
        self, model_round: int, site: str, summaries: dict[str, dict[str, Summary]]
    ) -> None:
        """``summaries[region][metric]`` for one site's validation of one model."""
        rows = [
            (model_round, site, region, metric, s.mean, s.std, s.n)
            for region, by_metric in summaries.items()
            for metric, s in by_metric.items()
        ]
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO validation VALUES (?,?,?,?,?,?,?)", rows)

    def validation(
        self, *, metric: str | None = None, site: str | None = None, region: str | None = None
    ) -> list[ValidationRow]:
        clauses, args = [], []
        for col, val in (("metric", metric), ("site", site), ("region", region)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT * FROM validation{where} ORDER BY model_round, site, region, metric", args
        ).fetchall()
        return [ValidationRow(*r) for r in rows]

    def record_case_metrics(
        self, model_round: int, site: str, case_id: str, values: dict[str, dict[str, float]]
    ) -> None:
        """``values[region][metric]`` for one case (local stores only)."""
        rows = [
            (model_round, site, case_id, region, metric, float(v))
            for region, by_metric in values.items()
            for metric, v in by_metric.items()
        ]
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO case_metrics VALUES (?,?,?,?,?,?)", rows)

    def case_metrics(self, model_round: int | None = None) -> list[tuple[Any, ...]]:
        """Rows ``(model_round, site, case_id, region, metric, value)``."""
        if model_round is None:
            return self._db.execute("SELECT * FROM case_metrics ORDER BY 1,2,3,4,5").fetchall()
        return self._db.execute(
            "SELECT * FROM case_metrics WHERE model_round = ? ORDER BY 1,2,3,4,5", (model_round,)
        ).fetchall()

    # -- cross-site evidence ------------------------------------------------------------
    def record_cross(self, rows: list[CrossRow]) -> None:
        """Store cross-site summaries (one transaction; a row of the same model, evaluator,
        region and metric replaces the earlier one)."""
        values = [
            (r.round, r.model_site, r.model_round, r.eval_site, r.reference_round, r.region,
             r.metric, r.summary.mean, r.summary.std, r.summary.n)
            for r in rows
        ]  # fmt: skip
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO cross_validation VALUES (?,?,?,?,?,?,?,?,?,?)", values
            )

    def cross(
        self,
        *,
        metric: str | None = None,
        region: str | None = None,
        upto_round: int | None = None,
    ) -> list[CrossRow]:
        """Cross-site rows (ordered by round, model site, evaluator, region, metric), only
        those made in rounds ``<= upto_round`` when given; [] for a store from before."""
        if not self._columns("cross_validation"):
            return []
        clauses, args = [], []
        for col, op, val in (("metric", "=", metric), ("region", "=", region),
                             ("round", "<=", upto_round)):  # fmt: skip
            if val is not None:
                clauses.append(f"{col} {op} ?")
                args.append(val)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT * FROM cross_validation{where} ORDER BY round, model_site, model_round, "
            "eval_site, region, metric",
            args,
        ).fetchall()
        return [
            CrossRow(int(r[0]), r[1], int(r[2]), r[3], int(r[4]), r[5], r[6],
                     Summary(float(r[7]), float(r[8]), int(r[9])))
            for r in rows
        ]  # fmt: skip

    # -- checkpoints, alarms, events --------------------------------------------------
    def record_checkpoint(self, model_round: int, path: Path) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
            (model_round, str(path), time.time()),
        )

    def checkpoints(self) -> dict[int, Path]:
        """``model_round -> path`` of the model files the run holds: a round whose model
        the plan's retention deleted has no row (``forget_checkpoints``)."""
        rows = self._db.execute("SELECT model_round, path FROM checkpoints ORDER BY 1").fetchall()
        return {int(r): Path(p) for r, p in rows}

    def forget_checkpoints(self, model_rounds: list[int]) -> None:
        """Remove the rows of ``model_rounds`` (their model files are being deleted)."""
        with self._tx():
            self._db.executemany(
                "DELETE FROM checkpoints WHERE model_round = ?", [(r,) for r in model_rounds]
            )

    def record_alarm(self, alarm: Alarm) -> bool:
        """Store an alarm; False if the same (round, site, kind) was already stored."""
        evidence = alarm.evidence.model_dump_json() if alarm.evidence is not None else None
        cur = self._db.execute(
            "INSERT OR IGNORE INTO alarms (round, site, kind, message, created, level, evidence)"
            " VALUES (?,?,?,?,?,?,?)",
            (alarm.round, alarm.site, alarm.kind, alarm.message, time.time(),
             AlarmLevel(alarm.level).value, evidence),
        )  # fmt: skip
        return cur.rowcount == 1

    def alarms(self, *, observations: bool = False) -> list[Alarm]:
        """The stored alarms by round, site and kind; with ``observations`` the
        observations too (``AlarmLevel``). A store from before levels holds alarms only."""
        have = self._columns("alarms")
        level = "level" if "level" in have else "'alarm'"
        evidence = "evidence" if "evidence" in have else "NULL"
        where = "" if observations else f" WHERE {level} = 'alarm'"
        rows = self._db.execute(
            f"SELECT round, site, kind, message, {level}, {evidence} FROM alarms{where} "
            "ORDER BY round, site, kind"
        ).fetchall()
        return [
            Alarm(int(r[0]), r[1], r[2], r[3], AlarmLevel(r[4]),
                  AlarmEvidence.model_validate_json(r[5]) if r[5] else None)
            for r in rows
        ]  # fmt: skip

    def log(self, message: str, level: str = "info") -> None:
        self._db.execute(
            "INSERT INTO events (time, level, message) VALUES (?,?,?)",
            (time.time(), level, message),
        )

    def events(self) -> list[tuple[float, str, str]]:
        return self._db.execute("SELECT time, level, message FROM events ORDER BY id").fetchall()

    # -- helpers ----------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")

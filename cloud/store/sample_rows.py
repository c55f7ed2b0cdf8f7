"""Field samples in the store: listing, labelling (with history) and retention.

A mixin of ``SqlStore`` (it needs ``_tx``). A sample's ``label`` is the latest label anyone
gave; every label is kept in ``sample_labels`` with who gave it and when. A sample is in
conflict while its labellers disagree: the latest labels of two labellers differ (a labeller
who changes their mind corrects themselves, which is no conflict) — the rule
``harken data check`` applies to an export.
"""
from __future__ import annotations

from cloud.store.samples import SAMPLE_COLS
from shared.errors import ConfigError

LABEL_COLS = ("label", "labeller", "t")
MIN_REF = 4


def _row(values) -> dict:
    d = dict(zip(SAMPLE_COLS, values))
    d["conflict"] = bool(d["conflict"])
    return d


def label_state(history: list[dict]) -> tuple[str | None, float | None, bool]:
    """(latest label, its time, whether the labellers disagree) of a label history (oldest first)."""
    if not history:
        return None, None, False
    latest: dict[str, str] = {}
    for h in history:
        latest[h["by"]] = h["label"]
    return history[-1]["label"], history[-1]["t"], len(set(latest.values())) > 1


class SampleRowsMixin:
    def samples(self, *, device: str | None = None, model: str | None = None, reason: str | None = None,
                label: str | None = None, unlabelled: bool = False, labelled: bool = False,
                conflicts: bool = False, alert: str | None = None, since: float | None = None,
                until: float | None = None, limit: int = 100, oldest_first: bool = False) -> list[dict]:
        """Samples, newest first by receive time (``oldest_first``: the other way)."""
        where, params = [], []
        for clause, value in (("device = ?", device), ("reason = ?", reason), ("label = ?", label),
                              ("alert = ?", alert), ("received_t >= ?", since), ("received_t < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if model is not None:  # a sha256 prefix
            where.append("model LIKE ? ESCAPE '\\'")
            params.append(model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if unlabelled or labelled:
            where.append("label IS NULL" if unlabelled else "label IS NOT NULL")
        if conflicts:
            where.append("conflict <> 0")
        order = "ASC" if oldest_first else "DESC"
        sql = (f"SELECT {', '.join(SAMPLE_COLS)} FROM samples{' WHERE ' + ' AND '.join(where) if where else ''}"
               f" ORDER BY received_t {order}, sha256 LIMIT {int(limit)}")
        with self._tx(write=False) as cur:
            return [_row(r) for r in cur.execute(sql, params).fetchall()]

    def sample(self, ref: str) -> dict | None:
        """One sample by its sha256, its id or a unique prefix of either (at least 4 characters),
        with ``labels``: its history, oldest first."""
        ref = (ref or "").strip().lower()
        if len(ref) < MIN_REF or any(c not in "0123456789abcdef" for c in ref):
            raise ConfigError(f"sample {ref!r}: give its id (16 hex digits) or a prefix of at least {MIN_REF}")
        with self._tx(write=False) as cur:
            rows = cur.execute(f"SELECT {', '.join(SAMPLE_COLS)} FROM samples WHERE sha256 LIKE ? ORDER BY sha256"
                               " LIMIT 2", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise ConfigError(f"sample prefix {ref!r} matches more than one sample; give more digits")
            if not rows:
                return None
            out = _row(rows[0])
            out["labels"] = self._label_history(cur, out["sha256"])
        return out

    @staticmethod
    def _label_history(cur, sha: str) -> list[dict]:
        rows = cur.execute("SELECT label, labeller, t FROM sample_labels WHERE sha256 = ? ORDER BY t, id",
                           (sha,)).fetchall()
        return [{"label": lab, "by": by, "t": t} for lab, by, t in rows]

    def sample_label_histories(self, shas: list[str]) -> dict[str, list[dict]]:
        """sha256 → label history (oldest first) for many samples (exports)."""
        out: dict[str, list[dict]] = {s: [] for s in shas}
        with self._tx(write=False) as cur:
            for i in range(0, len(shas), 500):
                part = shas[i:i + 500]
                rows = cur.execute(f"SELECT sha256, label, labeller, t FROM sample_labels WHERE sha256 IN"
                                   f" ({','.join('?' * len(part))}) ORDER BY t, id", part).fetchall()
                for sha, lab, by, t in rows:
                    out[sha].append({"label": lab, "by": by, "t": t})
        return out

    def label_sample(self, sha: str, label: str, by: str, t: float) -> dict:
        """Add a label to a sample's history; its latest label and conflict flag follow."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM samples WHERE sha256 = ?", (sha,)).fetchone() is None:
                raise ConfigError(f"no sample {sha[:16]}; `harken samples list` shows them")
            cur.execute("INSERT INTO sample_labels (sha256, label, labeller, t) VALUES (?, ?, ?, ?)",
                        (sha, label, by, t))
            latest, at, conflict = label_state(self._label_history(cur, sha))
            cur.execute("UPDATE samples SET label = ?, labelled_t = ?, conflict = ? WHERE sha256 = ?",
                        (latest, at, 1 if conflict else 0, sha))
        return self.sample(sha)

    def sample_summary(self) -> dict:
        """Counts: total, labelled, unlabelled, conflicts, by reason and by label."""
        with self._tx(write=False) as cur:
            total, labelled, conflicts = cur.execute(
                "SELECT COUNT(*), COUNT(label), COALESCE(SUM(CASE WHEN conflict <> 0 THEN 1 ELSE 0 END), 0)"
                " FROM samples").fetchone()
            reasons = dict(cur.execute("SELECT reason, COUNT(*) FROM samples GROUP BY reason").fetchall())
            labels = dict(cur.execute("SELECT label, COUNT(*) FROM samples WHERE label IS NOT NULL GROUP BY label"
                                      ).fetchall())
        return {"total": int(total), "labelled": int(labelled), "unlabelled": int(total) - int(labelled),
                "conflicts": int(conflicts), "by_reason": {k: int(v) for k, v in sorted(reasons.items())},
                "by_label": {k: int(v) for k, v in sorted(labels.items())}}

    def prune_samples(self, *, unlabelled_before: float | None, labelled_before: float | None) -> list[str]:
        """Delete samples received before the cutoffs (None: keep); returns their sha256 (the
        caller deletes the files)."""
        doomed: list[str] = []
        with self._tx() as cur:
            for cutoff, labelled in ((unlabelled_before, False), (labelled_before, True)):
                if cutoff is None:
                    continue
                which = "label IS NOT NULL" if labelled else "label IS NULL"
                doomed += [r[0] for r in cur.execute(f"SELECT sha256 FROM samples WHERE {which} AND received_t < ?",
                                                     (cutoff,)).fetchall()]
            for i in range(0, len(doomed), 500):
                part = doomed[i:i + 500]
                marks = ",".join("?" * len(part))
                cur.execute(f"DELETE FROM sample_labels WHERE sha256 IN ({marks})", part)
                cur.execute(f"DELETE FROM samples WHERE sha256 IN ({marks})", part)
        return doomed

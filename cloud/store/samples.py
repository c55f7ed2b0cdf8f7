"""Field samples in the store: staging a clip's pieces, then its row, its labels and retention.

A mixin of ``SqlStore`` (it needs ``_tx``). The wire format is ``shared.samples``; the files
themselves live in the sample directory (``cloud.samples.files``), never in the database.

Staging (inside the ingest batch's transaction, ``_write_samples``): a header goes to
``sample_pending`` and each chunk to ``sample_parts``, both keyed by (device, sha256), so a
chunk or a header that arrives twice is stored once; a chunk is checked against its header
(length and sha256) as soon as both are in, whichever came first. A clip whose file is already
stored is a duplicate and is dropped. The hourly quota per device counts the clips stored and
announced (headers) in the last hour by receive time, plus chunks that came before their header.
The batch returns the (device, sha256) pairs whose every chunk is in; ``cloud.samples.assemble``
turns them into a file and a row.
"""
from __future__ import annotations

import json

from cloud.store.base import Batch, Reject, SamplePart
from shared.errors import ProtocolError
from shared.samples import check_chunk

HOUR_S = 3600.0
SAMPLE_COLS = ("sha256", "id", "device", "model", "utterance", "captured_t", "received_t", "predicted",
               "confidence", "reason", "alert", "request", "duration_ms", "size_bytes", "label", "labelled_t",
               "conflict")


def _dumps(value) -> str:
    from cloud.store.records import dumps

    return dumps(value)


class SampleStagingMixin:
    # -- staging, inside the batch transaction ----------------------------------------------------
    def _write_samples(self, cur, batch: Batch) -> tuple[int, list[tuple[str, str]], list[Reject]]:
        """Stage headers and chunks; returns (rows staged, pairs now complete, rejects)."""
        if not batch.sample_headers and not batch.sample_parts:
            return 0, [], []
        pairs = {(r.message["device"], r.message["sha256"]) for r in batch.sample_headers}
        pairs |= {(p.device, p.sha256) for p in batch.sample_parts}
        stored = self._stored_shas(cur, {sha for _, sha in pairs})
        now = max([r.received_t for r in batch.sample_headers] + [p.received_t for p in batch.sample_parts])
        usage = {d: self._sample_usage(cur, d, now - HOUR_S) for d in sorted({d for d, _ in pairs})}
        quota = batch.sample_quota_bytes
        rejects: list[Reject] = []
        staged = 0
        known = set(self._pending_headers(cur, pairs))  # announced before: a header sent again is no news
        for r in sorted(batch.sample_headers, key=lambda r: (r.message["device"], r.message["sha256"])):
            h = r.message
            if h["sha256"] in stored or (h["device"], h["sha256"]) in known:
                continue
            known.add((h["device"], h["sha256"]))
            if quota is not None and usage[h["device"]] + h["size_bytes"] > quota:
                rejects.append(Reject.of(r.received_t, f"device:{h['device']}", "sample_quota",
                                         f"device {h['device']} sent {usage[h['device']]} bytes of samples in the last "
                                         f"hour; a {h['size_bytes']}-byte clip would pass the collector's "
                                         "samples_max_bytes_per_device_hour", r.body.encode() if r.body else b""))
                continue
            n = cur.execute("INSERT INTO sample_pending (device, sha256, received_t, size_bytes, chunks, header)"
                            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, sha256) DO NOTHING",
                            (h["device"], h["sha256"], r.received_t, h["size_bytes"], h["chunks"], _dumps(h))).rowcount
            usage[h["device"]] += h["size_bytes"]
            staged += max(n, 0)
        headers = self._pending_headers(cur, pairs)
        for p in sorted(batch.sample_parts, key=lambda p: (p.device, p.sha256, p.index)):
            if p.sha256 in stored:
                continue
            refused = self._check_part(p, headers.get((p.device, p.sha256)), usage, quota)
            if refused is not None:
                rejects.append(refused)
                continue
            n = cur.execute("INSERT INTO sample_parts (device, sha256, idx, received_t, size_bytes, data)"
                            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device, sha256, idx) DO NOTHING",
                            (p.device, p.sha256, p.index, p.received_t, len(p.data), p.data)).rowcount
            staged += max(n, 0)
        return staged, self._complete(cur, headers), rejects

    @staticmethod
    def _check_part(p: SamplePart, head: dict | None, usage: dict[str, int], quota: int | None) -> Reject | None:
        """A chunk that cannot be staged, as a Reject (None: stage it)."""
        if head is not None:
            try:
                check_chunk(head, p.index, p.data)
            except ProtocolError as exc:
                return Reject.of(p.received_t, p.topic, exc.code, exc.detail, p.data)
            return None
        if quota is not None and usage[p.device] + len(p.data) > quota:  # a chunk ahead of its header counts itself
            return Reject.of(p.received_t, p.topic, "sample_quota", f"device {p.device} is over the collector's "
                             "samples_max_bytes_per_device_hour", p.data)
        usage[p.device] += len(p.data)
        return None

    def _stored_shas(self, cur, shas: set[str]) -> set[str]:
        out: set[str] = set()
        ordered = sorted(shas)
        for i in range(0, len(ordered), 500):
            part = ordered[i:i + 500]
            rows = cur.execute(f"SELECT sha256 FROM samples WHERE sha256 IN ({','.join('?' * len(part))})",
                               part).fetchall()
            out.update(r[0] for r in rows)
        return out

    @staticmethod
    def _sample_usage(cur, device: str, since: float) -> int:
        """Bytes of clips stored or announced in the last hour, plus chunks still without a header."""
        stored = cur.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM samples WHERE device = ? AND received_t >= ?",
                             (device, since)).fetchone()[0]
        announced = cur.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM sample_pending WHERE device = ? AND"
                                " received_t >= ?", (device, since)).fetchone()[0]
        ahead = cur.execute("SELECT COALESCE(SUM(p.size_bytes), 0) FROM sample_parts p WHERE p.device = ? AND"
                            " p.received_t >= ? AND NOT EXISTS (SELECT 1 FROM sample_pending h WHERE"
                            " h.device = p.device AND h.sha256 = p.sha256)", (device, since)).fetchone()[0]
        return int(stored) + int(announced) + int(ahead)

    @staticmethod
    def _pending_headers(cur, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        out = {}
        for device, sha in sorted(pairs):
            row = cur.execute("SELECT header FROM sample_pending WHERE device = ? AND sha256 = ?",
                              (device, sha)).fetchone()
            if row is not None:
                out[(device, sha)] = json.loads(row[0])
        return out

    @staticmethod
    def _complete(cur, headers: dict[tuple[str, str], dict]) -> list[tuple[str, str]]:
        ready = []
        for (device, sha), head in sorted(headers.items()):
            n = cur.execute("SELECT COUNT(*) FROM sample_parts WHERE device = ? AND sha256 = ?",
                            (device, sha)).fetchone()[0]
            if int(n) >= head["chunks"]:
                ready.append((device, sha))
        return ready

    # -- assembly (cloud.samples.assemble) ----------------------------------------------------------
    def samples_ready(self, limit: int = 100) -> list[tuple[str, str]]:
        """(device, sha256) of staged clips whose every chunk is in (replicas may each miss the last)."""
        with self._tx(write=False) as cur:
            rows = cur.execute(
                "SELECT h.device, h.sha256 FROM sample_pending h WHERE h.chunks <= (SELECT COUNT(*) FROM"
                " sample_parts p WHERE p.device = h.device AND p.sha256 = h.sha256)"
                f" ORDER BY h.received_t LIMIT {int(limit)}").fetchall()
        return [(d, s) for d, s in rows]

    def sample_staged(self, device: str, sha: str) -> tuple[dict | None, list[bytes]]:
        """A staged clip's header (None if it has none yet) and its chunks in order."""
        with self._tx(write=False) as cur:
            row = cur.execute("SELECT header FROM sample_pending WHERE device = ? AND sha256 = ?",
                              (device, sha)).fetchone()
            parts = cur.execute("SELECT data FROM sample_parts WHERE device = ? AND sha256 = ? ORDER BY idx",
                                (device, sha)).fetchall()
        return (json.loads(row[0]) if row else None), [bytes(p[0]) for p in parts]

    def finish_sample(self, device: str, sha: str, row: dict | None, reject: Reject | None = None) -> bool:
        """Store the sample's row (None: it was refused, ``reject`` says why) and drop what was staged.
        Returns True if the row is new (False: its content was stored already, a duplicate)."""
        with self._tx() as cur:
            new = False
            if row is not None:
                cols = [c for c in SAMPLE_COLS if c in row]
                new = cur.execute(f"INSERT INTO samples ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
                                  " ON CONFLICT (sha256) DO NOTHING", [row[c] for c in cols]).rowcount > 0
            cur.execute("DELETE FROM sample_parts WHERE device = ? AND sha256 = ?", (device, sha))
            cur.execute("DELETE FROM sample_pending WHERE device = ? AND sha256 = ?", (device, sha))
            if reject is not None:
                self._write_rejects(cur, [reject])
        return new

    def drop_stale_samples(self, before_t: float) -> int:
        """Staged clips with nothing received since ``before_t`` never completed: drop them, counted
        as ``sample_incomplete`` rejects. Returns how many clips were dropped."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT device, sha256, MAX(t) FROM (SELECT device, sha256, received_t AS t FROM sample_pending"
                " UNION ALL SELECT device, sha256, received_t AS t FROM sample_parts) s GROUP BY device, sha256"
                " HAVING MAX(t) < ?", (before_t,)).fetchall()
            rejects = []
            for device, sha, last in rows:
                n = cur.execute("SELECT COUNT(*) FROM sample_parts WHERE device = ? AND sha256 = ?",
                                (device, sha)).fetchone()[0]
                cur.execute("DELETE FROM sample_parts WHERE device = ? AND sha256 = ?", (device, sha))
                cur.execute("DELETE FROM sample_pending WHERE device = ? AND sha256 = ?", (device, sha))
                rejects.append(Reject.of(last, f"device:{device}", "sample_incomplete",
                                         f"sample {sha[:16]} had {n} chunk(s) and nothing more arrived; the "
                                         "device's spool lost the rest", sha.encode()))
            self._write_rejects(cur, rejects)
        return len(rows)

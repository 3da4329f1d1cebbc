"""Cosine nearest-neighbour search over image embeddings ("more like this"), served from one file.

Vectors are kept as float16 (512-d: 1 KiB each, 1 GB per million) and scored in float32
(the rows a query reads are cast in blocks, then one BLAS product), so the answer is the
exact float32 ranking of the stored vectors. numpy only: a web process that answers
"similar images" does not import torch (300 MB and seconds on its first image page).

Small indexes (fewer than ``IVF_MIN`` vectors) are searched exactly: one product over every
stored vector. A large one is an inverted file: ``sqrt(N)`` spherical k-means centroids
(:func:`mlcore.cluster.coarse_lists`), the vectors stored grouped by their nearest centroid,
each group (list) contiguous. A query scores the centroids, reads the rows of its ``nprobe``
nearest lists (``nprobe * N / nlist`` rows: about 16 MB at 1,000,000) and ranks those. The
exact product over 1M x 512 costs ~100-250 ms a query on 2 cores; the lists a few ms.
``nprobe`` is chosen when the index is built: the least of ``PROBES`` whose recall@``RECALL_K``
against the exact search, on a seeded sample of the stored vectors, reaches ``RECALL``. The
file keeps it and the recall it measured (``index.recall``).

The saved index is one uncompressed ``.npz``: ``emb`` (float16, list order), ``ids``,
``id_sorted`` and ``id_row`` (the ids in order and their rows: a lookup by id is a binary
search in the file, nothing built at load), and for an inverted file ``centroids``,
``offsets`` (list ``l`` is rows ``offsets[l]:offsets[l + 1]``), ``nprobe``, ``recall``.
:meth:`SimilarIndex.load` memory-maps the arrays (:func:`mapped_npz`) and reads a query's
lists (and a queried row) with ``pread`` from the file: the operating system's page cache
holds the file once for every process and a web process does not copy it. What it does map
are the pages the id lookup's binary search touches (with the kernel's fault-around, a few
hundred KB a query; measured at 1M while the queried row was still read through the
mapping: RSS 108 MB after the first query, 444 MB after 200, of which 352 MB shared file
pages). The first query after a load costs what the others do plus
those first faults. An ``s3://`` index is fetched once into mlcore's local content-addressed
cache (:mod:`mlcore.data`) and mapped from there. bench/suspects_cifar10n.py --scale
measures build, first query, p95, recall and a loading process's memory at 1,000,000.
"""
from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import storage

CAST_ROWS = 65536                          # float16 rows cast to float32 at a time
IVF_MIN = 50_000                           # from this many vectors an index is an inverted file
RECALL = 0.95                              # the least recall@RECALL_K nprobe is chosen for
RECALL_K = 12                              # what the image page asks for
RECALL_SAMPLE = 200                        # stored vectors that recall is measured on
PROBES = (1, 2, 4, 8, 16, 32, 64, 128)     # the numbers of probed lists tried, in order


def _scores(block: np.ndarray, v: np.ndarray) -> np.ndarray:
    """float32 cosine of each float16 row of ``block`` with the unit float32 ``v``."""
    out = np.empty(len(block), dtype=np.float32)
    for s in range(0, len(block), CAST_ROWS):
        out[s:s + CAST_ROWS] = block[s:s + CAST_ROWS].astype(np.float32) @ v
    return out


class SimilarIndex:
    """``SimilarIndex(emb (N, D), ids (N,))``; ``query(vector or id, k) -> (ids, sims)``, best first.

    ``nlist``: lists of the inverted file (default ``sqrt(N)`` from ``IVF_MIN`` vectors, 0 =
    exact search); ``recall``: what the number of probed lists is chosen to reach.
    """

    def __init__(self, emb: np.ndarray, ids: np.ndarray, *, nlist: int | None = None,
                 recall: float = RECALL, seed: int = 0):
        emb = np.asarray(emb)
        if emb.ndim != 2 or len(emb) != len(ids):
            raise ValueError(f"emb must be (N, D) with N = len(ids); got {emb.shape} and {len(ids)} ids")
        stored = np.empty(emb.shape, dtype=np.float16)
        for s in range(0, len(emb), 65536):  # normalise in chunks: no float32 copy of the whole set
            e = emb[s:s + 65536].astype(np.float32)
            stored[s:s + 65536] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        ids = np.asarray(ids)
        n = len(ids)
        nlist = (int(np.sqrt(n)) if n >= IVF_MIN else 0) if nlist is None else min(int(nlist), n)
        self.centroids = self.offsets = None
        self.nprobe, self.recall = 0, 1.0
        if nlist > 1:
            from .cluster import coarse_lists, nearest_lists

            self.centroids = coarse_lists(stored, nlist, seed=seed)
            lists = nearest_lists(stored, self.centroids, 1)[:, 0]
            order = np.argsort(lists, kind="stable")
            stored, ids = stored[order], ids[order]
            self.offsets = np.searchsorted(lists[order], np.arange(nlist + 1)).astype(np.int64)
        self.emb = stored
        self.ids = ids
        self._file = None
        self._sorted = self._row = None
        if self.centroids is not None:
            self.nprobe, self.recall = self._choose_nprobe(recall, seed)

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ lookup

    def _position(self, key) -> int | None:
        if self._sorted is None:  # an index built here or an older file: sort the ids once
            self._row = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._row]
        try:
            at = int(np.searchsorted(self._sorted, key))
        except (TypeError, ValueError):
            return None
        if at < len(self._sorted) and self._sorted[at] == key:
            return int(self._row[at])
        return None

    def _vector(self, vec_or_id) -> tuple[np.ndarray, int | None]:
        if isinstance(vec_or_id, np.ndarray) and vec_or_id.ndim == 1 and vec_or_id.dtype.kind == "f":
            v = vec_or_id.astype(np.float32)
            return v / max(float(np.linalg.norm(v)), 1e-12), None
        key = vec_or_id.item() if hasattr(vec_or_id, "item") else vec_or_id
        r = self._position(key)
        if r is None:
            raise KeyError(f"id {vec_or_id!r} is not in the index")
        return self._rows(r, r + 1)[0].astype(np.float32), r  # read, not faulted in through the mapping

    # ------------------------------------------------------------------ search

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Stored rows ``start:stop`` (float16): read from the file when loaded, else from memory."""
        if self._file is None:
            return self.emb[start:stop]
        fh, offset, row_bytes = self._file
        data = os.pread(fh.fileno(), (stop - start) * row_bytes, offset + start * row_bytes)
        return np.frombuffer(data, dtype=np.float16).reshape(stop - start, -1)

    def _candidates(self, v: np.ndarray, nprobe: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows a query scores (float16) and their row numbers (None: all rows, in order)."""
        if self.centroids is None or (nprobe or self.nprobe) >= len(self.centroids):
            return self.emb, None  # every row (of a loaded index: through the mapping)
        p = nprobe or self.nprobe
        lists = np.sort(np.argpartition(-(self.centroids @ v), p - 1)[:p])
        spans = [(int(self.offsets[c]), int(self.offsets[c + 1])) for c in lists]
        spans = [(a, b) for a, b in spans if b > a]
        if not spans:
            return np.zeros((0, self.emb.shape[1]), dtype=np.float16), np.zeros(0, dtype=np.int64)
        return (np.concatenate([self._rows(a, b) for a, b in spans]),
                np.concatenate([np.arange(a, b) for a, b in spans]))

    def query(self, vec_or_id, k: int = 10, *, exclude_self: bool = True,
              nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar stored items to a vector or a stored id: ``(ids, cosine sims)``.

        Querying by id leaves that item itself out unless ``exclude_self=False``. ``nprobe``
        overrides the stored number of probed lists (at least the number of lists: exact).
        """
        v, self_row = self._vector(vec_or_id)
        drop = self_row is not None and exclude_self
        block, rows = self._candidates(v, nprobe)
        n = len(block)
        want = min(n, k + (1 if drop else 0))
        if want <= 0:
            return np.asarray(self.ids[:0]), np.zeros(0, dtype=np.float32)
        sims = _scores(block, v)
        if drop:
            sims[np.flatnonzero((rows if rows is not None else np.arange(n)) == self_row)] = -np.inf
        cand = np.argpartition(-sims, want - 1)[:want] if want < n else np.arange(n)
        cand = cand[np.argsort(-sims[cand], kind="stable")]
        cand = cand[np.isfinite(sims[cand])][:k]
        return np.asarray(self.ids[cand if rows is None else rows[cand]]), sims[cand]

    def _choose_nprobe(self, recall: float, seed: int) -> tuple[int, float]:
        """The least of ``PROBES`` whose recall@RECALL_K against the exact search reaches ``recall``,
        and that recall, on ``RECALL_SAMPLE`` seeded stored vectors as queries."""
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(self.ids), min(len(self.ids), RECALL_SAMPLE), replace=False))
        truth = [set(t) for t in self._exact_top(sample, RECALL_K)]
        got = 0.0
        for p in PROBES:
            if p >= len(self.centroids):
                return len(self.centroids), 1.0
            found = [self._candidates_top(r, p) for r in sample]
            got = float(np.mean([len(t & set(f)) / max(1, len(t)) for t, f in zip(truth, found)]))
            if got >= recall:
                return p, got
        return PROBES[-1], got

    def _candidates_top(self, r: int, p: int) -> np.ndarray:
        """Rows of the top RECALL_K of stored row ``r`` with ``p`` probed lists (itself left out)."""
        v = self.emb[r].astype(np.float32)
        block, rows = self._candidates(v, p)
        s = _scores(block, v)
        s[rows == r] = -np.inf
        return rows[np.argsort(-s, kind="stable")[:RECALL_K]]

    def _exact_top(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(len(rows), k) rows of the exact top ``k`` of each of ``rows`` (itself left out), blockwise."""
        q = self.emb[rows].astype(np.float32)
        best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(rows), k), dtype=np.int64)
        for s in range(0, len(self.ids), 65536):
            sim = q @ self.emb[s:s + 65536].astype(np.float32).T
            hit = (rows >= s) & (rows < s + sim.shape[1])
            sim[np.flatnonzero(hit), rows[hit] - s] = -np.inf
            all_s = np.hstack([best_s, sim])
            all_i = np.hstack([best_i, np.broadcast_to(np.arange(s, s + sim.shape[1]), sim.shape)])
            top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
        return best_i

    # ------------------------------------------------------------------ file

    def _arrays(self) -> dict[str, np.ndarray]:
        row = np.argsort(self.ids, kind="stable") if self._row is None else np.asarray(self._row)
        out = {"emb": self.emb, "ids": self.ids, "id_sorted": self.ids[row], "id_row": row}
        if self.centroids is not None:
            out.update(centroids=self.centroids, offsets=self.offsets, nprobe=np.array([self.nprobe]),
                       recall=np.array([self.recall]))
        return out

    def save(self, uri: str) -> str:
        """Write the index as one uncompressed ``.npz`` (see the module docstring) to ``uri``; returns it.

        A local file is written through a temporary file in the same folder and renamed, so
        a reader never maps half a file.
        """
        uri = storage.to_uri(uri) if not storage.is_s3(uri) else uri
        arrays = self._arrays()
        if storage.is_s3(uri):
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            storage.write_bytes(uri, buf.getvalue())
            return uri
        path = storage.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return uri

    @classmethod
    def load(cls, uri: str) -> "SimilarIndex":
        """The index saved at ``uri``, memory-mapped (see the module docstring); nothing is read whole."""
        uri = storage.to_uri(uri) if not storage.is_s3(uri) else uri
        if storage.is_s3(uri):
            from .data import cached_path, fetch

            path = cached_path(uri)
            if path is None:
                fetch(uri)  # once per machine: into the content-addressed cache
                path = cached_path(uri)
        else:
            path = storage.local_path(uri)
        arrays = mapped_npz(path)
        index = cls.__new__(cls)
        emb = arrays["emb"]
        if emb.dtype != np.float16:
            emb = np.asarray(emb, dtype=np.float16)
        index.emb = emb
        index.ids = arrays["ids"]
        index._sorted, index._row = arrays.get("id_sorted"), arrays.get("id_row")
        index._file = None
        if isinstance(emb, np.memmap) and emb.ndim == 2:  # lists are read with pread, not through the mapping
            index._file = (open(path, "rb"), int(emb.offset), emb.shape[1] * emb.itemsize)
        index.centroids = np.asarray(arrays["centroids"]) if "centroids" in arrays else None
        index.offsets = np.asarray(arrays["offsets"]) if "offsets" in arrays else None
        index.nprobe = int(arrays["nprobe"][0]) if "nprobe" in arrays else 0
        index.recall = float(arrays["recall"][0]) if "recall" in arrays else 1.0
        return index


def mapped_npz(path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` file, memory-mapped read-only (others read normally).

    An ``.npz`` is a zip of ``.npy`` files; a member stored without compression sits in the
    file as is, after its zip local header and its ``.npy`` header, so it can be mapped.
    """
    path = Path(path)
    out = {}
    with zipfile.ZipFile(path) as z, path.open("rb") as fh:
        for info in z.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                out[name] = np.load(io.BytesIO(z.read(info)), allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            head = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject or 0 in shape:
                out[name] = np.load(io.BytesIO(z.read(info)), allow_pickle=False)
                continue
            out[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=fh.tell(),
                                  order="F" if fortran else "C")
    return out

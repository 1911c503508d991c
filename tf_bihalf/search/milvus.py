"""``MilvusHammingIndex``: exact Hamming search in Milvus (embedded Milvus Lite or a server).

The index stores each code as a Milvus ``BINARY_VECTOR`` with the ``HAMMING`` metric and the
exhaustive ``BIN_FLAT`` index, keyed by a primary key: the id, INT64 or VARCHAR (strings, such
as the image paths that ``export.encode`` uses; compared by code point, as numpy and Python do,
which is UTF-8 byte order). ``uri`` picks the engine:

- a path ending in ``.db``: embedded Milvus Lite, a local file (``pip install
  'tf_bihalf[milvus]'``: ``milvus-lite`` 2.5.x; 3.x cannot store binary vectors);
- ``http://host:19530`` (or ``https://``, ``tcp://``): a Milvus server or cluster (there a
  collection is split over ``num_shards`` shards and query nodes; see ``docs/scale.md``).

Results are those of ``HammingIndex`` (the k smallest (distance, id) pairs, sorted; every item
within an inclusive radius). Milvus alone does not give them: at equal distance it returns
items in insertion order, its range radius is exclusive, and one request returns at most 16384
hits. So:

- ``search`` over-fetches ``overfetch * k + 16`` neighbours (at most 16384). A query whose
  last fetched distance exceeds its k-th distance D has every item at D among them: sorting by
  (distance, id) and keeping k is exact. Otherwise the items closer than D are all in the first
  k (BIN_FLAT is exhaustive), and the m smallest ids at exactly D are found by range requests
  ``D <= distance < D + 1`` filtered by ``id <= t``: when a full page comes back, t becomes
  the m-th smallest id in it (strictly smaller than before, since m < 16384) and the request
  is repeated, until a page is not full.
- ``range_search`` asks for ``distance < radius + 1`` and, when a page is full, splits the id
  range at the page's median id and asks for both halves, until every page is complete.

The first connection is retried (``connect_attempts`` times, doubling ``retry_delay``): a
server that is still starting, or a Lite process still opening its file, answers the next try.

Example (needs ``milvus-lite``):

>>> index = MilvusHammingIndex(os.path.join(tmp_dir, "codes.db"), bits=4)
>>> index.add(np.array([[1, 1, 1, 1], [1, 1, 1, -1], [-1, -1, -1, -1]]), ids=[10, 20, 30])
>>> index.search(np.array([[1, 1, -1, -1]]), k=2)
(array([[1, 2]], dtype=int32), array([[20, 10]]))
"""

from __future__ import annotations

import importlib.util
import json
import numbers
import os
import time

import numpy as np
from absl import logging

from tf_bihalf.codes import check_bits, packed_width
from tf_bihalf.search.index import _as_ids, packed_index_codes

__all__ = ["MAX_K", "MilvusHammingIndex", "drop_collection", "is_milvus_uri", "milvus_available"]

#: Milvus' limit on hits per request ("topk"); ``search`` accepts k up to one less, so that
#: each narrowing step of the tie resolution strictly shrinks its id bound.
PAGE_LIMIT = 16384
MAX_K = PAGE_LIMIT - 1
_DESCRIPTION_FORMAT = "tf_bihalf.milvus_hamming_index"
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")


def _literal(value) -> str:
    """An id as a Milvus expression literal: an integer, or a double-quoted escaped string."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(int(value))


def milvus_available(lite: bool = True) -> bool:
    """True when ``pymilvus`` (and, with ``lite``, ``milvus-lite``) can be imported."""
    names = ("pymilvus", "milvus_lite") if lite else ("pymilvus",)
    return all(importlib.util.find_spec(name) is not None for name in names)


def is_milvus_uri(location: str) -> bool:
    """True for a Milvus Lite file (``*.db``) or a server URI (``http://...``)."""
    location = os.fspath(location)
    return location.endswith(".db") or location.startswith(_SERVER_SCHEMES)


def connect(uri: str, token: str = "", attempts: int = 5, retry_delay: float = 1.0, **kwargs):
    """A ``pymilvus.MilvusClient`` for ``uri``, retrying the first connection.

    Raises:
      ValueError: pymilvus (or, for a ``.db`` file, milvus-lite) is not installed.
      ConnectionError: every attempt failed (the message names the URI and the last error).
    """
    uri = os.fspath(uri)
    lite = not uri.startswith(_SERVER_SCHEMES)
    if not milvus_available(lite=lite):
        raise ValueError(
            f"the milvus backend needs pymilvus{' and milvus-lite' if lite else ''}: "
            "pip install 'tf_bihalf[milvus]' (milvus-lite>=2.4,<3)."
        )
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if lite:
        parent = os.path.dirname(os.path.abspath(uri))
        if not os.path.isdir(parent):
            raise FileNotFoundError(
                f"directory {parent} (for the Milvus Lite file {uri}) not found."
            )
    last_error = None
    for attempt in range(attempts):
        try:
            return MilvusClient(uri=uri, token=token, **kwargs)
        except (MilvusException, ConnectionError, OSError) as error:
            last_error = error
            if attempt + 1 < attempts:
                delay = retry_delay * 2**attempt
                logging.warning(
                    "Milvus at %s: connection attempt %d/%d failed (%s); retrying in %.1f s.",
                    uri,
                    attempt + 1,
                    attempts,
                    error,
                    delay,
                )
                time.sleep(delay)
    raise ConnectionError(
        f"cannot connect to Milvus at {uri} after {attempts} attempts: {last_error}"
    )


def drop_collection(
    uri: str, collection: str = "tf_bihalf_codes", token: str = "", **kwargs
) -> bool:
    """Drops ``collection`` at ``uri`` if it exists (whatever its layout); True if it did.

    ``kwargs`` go to ``connect`` (``attempts``, ``retry_delay``).
    """
    client = connect(uri, token, **kwargs)
    try:
        if not client.has_collection(collection):
            return False
        client.drop_collection(collection)
        return True
    finally:
        client.close()


class MilvusHammingIndex:
    """Exact Hamming index in a Milvus collection, with ``HammingIndex``'s queries and results.

    Args:
      uri: a Milvus Lite file (``*.db``) or a server URI (``http://host:19530``).
      bits: the code length K; required to create the collection, checked against an existing one.
      collection: the collection name.
      token: credentials for a server (``"user:password"`` or an API key).
      num_shards: shards of a new collection on a server (Milvus Lite ignores it).
      connect_attempts, retry_delay: retries of the first connection (delay doubles each time).
      insert_batch: rows per insert request.
      query_batch: queries per search request.
      overfetch: ``search`` asks for ``overfetch * k + 16`` neighbours. More costs every query
        a little (Milvus Lite at 10M codes: limit 464 took 1.45x the time of 216); too few
        costs the queries whose ties at the k-th distance do not fit one more full-scan request.
        2 suits top-100 over 10M random 64-bit codes (about 35 closer than the 100th distance
        and 90 at it); at 10^9 (about 50 and 180) use 3.
      id_type: ``"int"`` (int64 ids) or ``"str"`` (strings of at most ``max_id_length`` UTF-8
        bytes) for a new collection; an existing one keeps its own.

    Milvus does not refuse a duplicate primary key, so ``add`` checks new ids against the
    collection first.
    """

    #: Hits per request (Milvus' limit); a class attribute so that tests can page sooner.
    page_limit = PAGE_LIMIT

    def __init__(
        self,
        uri: str,
        bits: int | None = None,
        collection: str = "tf_bihalf_codes",
        token: str = "",
        num_shards: int = 1,
        connect_attempts: int = 5,
        retry_delay: float = 1.0,
        insert_batch: int = 20_000,
        query_batch: int = 64,
        overfetch: float = 2.0,
        id_type: str = "int",
        max_id_length: int = 1024,
    ):
        self.uri = os.fspath(uri)
        if not is_milvus_uri(self.uri):
            raise ValueError(
                f"uri must be a Milvus Lite file ending in .db or a server URI (http://host:19530); "
                f"got {self.uri!r}."
            )
        self.collection = collection
        self.insert_batch = insert_batch
        self.query_batch = query_batch
        if not overfetch >= 1:
            raise ValueError(f"overfetch must be at least 1; got {overfetch!r}.")
        self.overfetch = overfetch
        self._client = connect(self.uri, token, attempts=connect_attempts, retry_delay=retry_delay)
        if self._client.has_collection(collection):
            description = self._client.describe_collection(collection)
            stored_bits, stored_ids = self._stored_layout(description)
            if bits is not None and check_bits(bits) != stored_bits:
                raise ValueError(
                    f"collection {collection!r} at {self.uri} holds {stored_bits}-bit codes; "
                    f"got bits={bits}."
                )
            self.bits, self.id_type = stored_bits, stored_ids
            max_length = next(
                (
                    field.get("params", {}).get("max_length")
                    for field in description.get("fields", [])
                    if field.get("name") == "id"
                ),
                None,
            )
            self.max_id_length = int(max_length) if max_length is not None else None
        else:
            if bits is None:
                raise ValueError(
                    f"collection {collection!r} does not exist at {self.uri}: pass bits=K to create it."
                )
            if id_type not in ("int", "str"):
                raise ValueError(f"id_type must be 'int' or 'str'; got {id_type!r}.")
            self.bits, self.id_type = check_bits(bits), id_type
            self.max_id_length = max_id_length
            self._create(num_shards)
        self._client.load_collection(collection)
        self._next_id = None

    # -- collection ------------------------------------------------------------------------------

    def _stored_layout(self, description: dict) -> tuple[int, str]:
        """(bits, id type) from the collection's description, written by ``_create``."""
        try:
            meta = json.loads(description.get("description") or "{}")
        except json.JSONDecodeError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("format") != _DESCRIPTION_FORMAT:
            raise ValueError(
                f"collection {self.collection!r} at {self.uri} was not created by "
                "MilvusHammingIndex; use another collection name."
            )
        return check_bits(meta.get("bits"), "collection bits"), meta.get("ids", "int")

    def _create(self, num_shards: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(
            auto_id=False,
            enable_dynamic_field=False,
            description=json.dumps(
                {"format": _DESCRIPTION_FORMAT, "bits": self.bits, "ids": self.id_type}
            ),
        )
        if self.id_type == "int":
            schema.add_field("id", DataType.INT64, is_primary=True)
        else:
            schema.add_field(
                "id", DataType.VARCHAR, is_primary=True, max_length=self.max_id_length or 1024
            )
        # Milvus binary vectors have a multiple of 8 dimensions; padding bits are always 0.
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8 * packed_width(self.bits))
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
        self._client.create_collection(
            self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            num_shards=num_shards,
        )

    @property
    def backend(self) -> str:
        return "milvus"

    def __len__(self) -> int:
        """Rows in the collection (Milvus' ``count(*)``; Milvus Lite was seen to omit the
        last insert batch right after a 10M-code ingest, so searches never rely on it)."""
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    @property
    def ntotal(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"MilvusHammingIndex({self.uri!r}, bits={self.bits}, collection={self.collection!r})"

    def close(self) -> None:
        """Closes the connection (a Lite file is released for other processes)."""
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def reset(self) -> None:
        """Removes every code (drops and recreates the collection)."""
        self._client.drop_collection(self.collection)
        self._create(1)
        self._client.load_collection(self.collection)
        self._next_id = 0

    # -- building --------------------------------------------------------------------------------

    def _packed_codes(self, codes, name: str) -> np.ndarray:
        return packed_index_codes(codes, self.bits, name)

    def _max_id(self) -> int:
        """The largest stored id (-1 when empty), by iterating the ids once; then cached."""
        if self._next_id is None:
            largest = -1
            iterator = self._client.query_iterator(
                self.collection, batch_size=16384, filter="", output_fields=["id"]
            )
            try:
                while rows := iterator.next():
                    largest = max(largest, max(row["id"] for row in rows))
            finally:
                iterator.close()
            self._next_id = largest + 1
        return self._next_id - 1

    def _existing(self, ids: np.ndarray) -> list:
        found = []
        for start in range(0, ids.shape[0], 16384):
            chunk = ids[start : start + 16384]
            rows = self._client.query(
                self.collection,
                filter=f"id in {json.dumps(chunk.tolist(), ensure_ascii=False)}",
                output_fields=["id"],
                limit=chunk.shape[0],
            )
            found.extend(row["id"] for row in rows)
        return found

    def add(self, codes, ids=None) -> None:
        """Adds codes with unique ids (int: default consecutive after the largest stored id).

        Raises:
          ValueError: codes of another length, ids of the wrong length or kind (int vs string,
            as the collection stores), a string id longer than the collection allows, or
            duplicate ids (among themselves or with stored ones).
        """
        packed = self._packed_codes(codes, "codes")
        count = packed.shape[0]
        if ids is None:
            if self.id_type == "str":
                raise ValueError("this index holds string ids, so add() needs ids for new codes.")
            first = self._max_id() + 1
            new_ids = np.arange(first, first + count, dtype=np.int64)
        else:
            new_ids = _as_ids(ids, count)
            kind = "str" if new_ids.dtype.kind == "U" else "int"
            if count and kind != self.id_type:
                raise ValueError(
                    f"collection {self.collection!r} stores {self.id_type} ids; got {kind} ids "
                    "(create a collection with id_type='str' for string ids)."
                )
            if kind == "str" and self.max_id_length is not None:
                longest = max((len(value.encode("utf-8")) for value in new_ids), default=0)
                if longest > self.max_id_length:
                    raise ValueError(
                        f"string ids must be at most {self.max_id_length} UTF-8 bytes in "
                        f"collection {self.collection!r}; the longest new id has {longest}."
                    )
            if np.unique(new_ids).size != count:
                raise ValueError("ids must be unique; the new ids contain duplicates.")
            existing = self._existing(new_ids)
            if existing:
                raise ValueError(f"ids must be unique; id {existing[0]!r} is already in the index.")
        for start in range(0, count, self.insert_batch):
            stop = min(count, start + self.insert_batch)
            rows = [
                {"id": identifier.item(), "code": code.tobytes()}
                for identifier, code in zip(new_ids[start:stop], packed[start:stop], strict=True)
            ]
            self._client.insert(self.collection, rows)
        if count and self.id_type == "int" and self._next_id is not None:
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)

    # -- queries ---------------------------------------------------------------------------------

    def _request(self, queries: np.ndarray, limit: int, params: dict | None = None, filter=""):
        search_params = {"metric_type": "HAMMING", "params": params or {}}
        hits = self._client.search(
            self.collection,
            data=[query.tobytes() for query in queries],
            limit=limit,
            filter=filter,
            output_fields=[],
            search_params=search_params,
            anns_field="code",
        )
        results = []
        for row in hits:
            ids = self._ids_array([hit["id"] for hit in row])
            distances = np.fromiter(
                (round(hit["distance"]) for hit in row), dtype=np.int32, count=len(row)
            )
            results.append((distances, ids))
        return results

    def _ids_array(self, values: list) -> np.ndarray:
        if self.id_type == "int":
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="U1")

    def _range_page(self, query: np.ndarray, low: int, high: int, filter: str):
        """One page of items with ``low <= distance < high`` (and the filter), unordered."""
        params = {"radius": high}
        if low > 0:
            params["range_filter"] = low
        return self._request(query[None], self.page_limit, params, filter)[0]

    def _smallest_ids_at(self, query: np.ndarray, distance: int, count: int) -> np.ndarray:
        """The ``count`` smallest ids at exactly ``distance`` from ``query`` (count < PAGE_LIMIT)."""
        bound = None
        while True:
            filter = "" if bound is None else f"id <= {_literal(bound)}"
            distances, ids = self._range_page(query, distance, distance + 1, filter)
            full = ids.shape[0] >= self.page_limit
            ids = np.sort(ids[distances == distance])
            if not full:
                return ids[:count]
            bound = ids[count - 1].item()

    def _check_queries(self, query_codes) -> np.ndarray:
        queries = self._packed_codes(query_codes, "query_codes")
        if not len(self):
            raise ValueError("the index is empty: add() codes before searching.")
        return queries

    def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query (k <= 16383, Milvus' page limit minus one).

        Returns:
          ``(distances, ids)``: int32 and int64 (Q, min(k, len)), the k smallest
          (distance, id) pairs of each query, sorted by distance then id.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        if k >= self.page_limit:
            raise ValueError(
                f"k must be at most {self.page_limit - 1} with the milvus backend; got {k}."
            )
        queries = self._packed_codes(query_codes, "query_codes")
        k = int(k)
        if not queries.shape[0]:
            k = min(k, len(self))
            if not k:
                raise ValueError("the index is empty: add() codes before searching.")
            return np.zeros((0, k), np.int32), self._ids_array([]).reshape(0, k)
        # The collection's size comes from the replies (a page shorter than asked for holds the
        # whole collection), not from count(*), which can lag just after an insert.
        fetch = min(int(self.overfetch * k) + 16, self.page_limit)
        rows = []
        for start in range(0, queries.shape[0], self.query_batch):
            batch = queries[start : start + self.query_batch]
            for offset, (distances, ids) in enumerate(self._request(batch, fetch)):
                if not ids.shape[0]:
                    raise ValueError("the index is empty: add() codes before searching.")
                order = np.lexsort((ids, distances))
                distances, ids = distances[order], ids[order]
                count = min(k, ids.shape[0])
                kth = distances[count - 1]
                if ids.shape[0] < fetch or distances[-1] > kth:
                    rows.append((distances[:count], ids[:count]))
                    continue
                closer = distances < kth
                tied = self._smallest_ids_at(batch[offset], int(kth), k - int(closer.sum()))
                rows.append(
                    (
                        np.concatenate([distances[closer], np.full(tied.shape, kth, np.int32)]),
                        np.concatenate([ids[closer], tied]),
                    )
                )
        # Rows differ in length only if codes were added during the search (below ``fetch``).
        width = min(row[0].shape[0] for row in rows)
        return (
            np.stack([row[0][:width] for row in rows]),
            np.stack([row[1][:width] for row in rows]),
        )

    def range_search(self, query_codes, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within Hamming distance ``radius`` (inclusive): ``(lims, distances, ids)``,
        sorted by (distance, id) per query, as in ``HammingIndex.range_search``."""
        if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
        queries = self._check_queries(query_codes)
        radius = min(int(radius), self.bits)
        lims = np.zeros(queries.shape[0] + 1, np.int64)
        all_distances, all_ids = [np.zeros(0, np.int32)], [self._ids_array([])]
        for row, query in enumerate(queries):
            pieces = []
            pending = [(None, None)]  # id ranges (low exclusive, high inclusive) to fetch
            while pending:
                low, high = pending.pop()
                conditions = []
                if low is not None:
                    conditions.append(f"id > {_literal(low)}")
                if high is not None:
                    conditions.append(f"id <= {_literal(high)}")
                distances, ids = self._range_page(query, 0, radius + 1, " and ".join(conditions))
                if ids.shape[0] < self.page_limit:
                    pieces.append((distances, ids))
                    continue
                middle = np.sort(ids)[ids.shape[0] // 2].item()
                pending.extend([(low, middle), (middle, high)])
            distances = np.concatenate([piece[0] for piece in pieces])
            ids = np.concatenate([piece[1] for piece in pieces])
            order = np.lexsort((ids, distances))
            all_distances.append(distances[order])
            all_ids.append(ids[order])
            lims[row + 1] = lims[row] + order.shape[0]
        return lims, np.concatenate(all_distances), np.concatenate(all_ids)

"""The compiled counting kernel (numba); ``_counting`` documents the algorithm.

Importing this module raises ImportError when numba is not installed; ``_counting`` then uses
its numpy implementation. The kernel is compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

_ITEM = np.int64(1 << 32)
_ITEM_AND_RELEVANT = np.int64((1 << 32) | 1)
_LOW = np.int64((1 << 32) - 1)


@intrinsic
def _popcount(typingctx, value):
    """Number of set bits of a uint64 (the CPU's popcount instruction), as int64."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, arguments):
        return builder.ctpop(arguments[0])

    return types.int64(types.uint64), codegen


@numba.njit(nogil=True, cache=True)
def chunk_kernel(
    query_words,
    database_words,
    multi_label,
    query_classes,
    database_classes,
    query_label_words,
    database_label_words,
    bits,
    ks,
    ns,
    values,
    records,
    histogram,
    relevant_histogram,
    ap_sum,
    ap_found,
    hits,
):
    """Fills the ``ChunkStatistics`` arrays of one chunk; see ``_counting.chunk_statistics``.

    ``values`` is a work row of N unsigned integers (2 * distance + relevant of one query);
    ``records`` is an int64 (2, N) work array: for each relevant item of the current query, in
    database order, its distance and the numbers of items and of relevant items met earlier
    in the database at that distance (packed as ``items << 32 | relevant``; N < 2^31).
    """
    rows = query_words.shape[0]
    words = query_words.shape[1]
    size = database_words.shape[1]
    label_words = query_label_words.shape[1]
    bins = bits + 1
    running = np.zeros(bins, dtype=np.int64)
    running_relevant = np.zeros(bins, dtype=np.int64)
    rank_before = np.empty(bins, dtype=np.int64)
    found_before = np.empty(bins, dtype=np.int64)
    bucket_sum = np.zeros(bins, dtype=np.float64)
    is_cut = np.zeros(bins, dtype=np.bool_)
    # The thresholds: every k of AP@k, then every n of the hit counts.
    thresholds = np.concatenate((ks, ns))
    num_ks = ks.shape[0]
    ranking = thresholds.shape[0] > 0
    longest = 0
    for threshold in thresholds:
        longest = max(longest, threshold)
    # When the thresholds reach only a small part of the ranking, count the histogram first and
    # then run the counters only over the items at distances that can rank within them.
    histogram_first = not ranking or 4 * longest < size
    cut_bucket = np.empty(thresholds.shape[0], dtype=np.int64)
    partial_sum = np.empty(thresholds.shape[0], dtype=np.float64)
    partial_found = np.empty(thresholds.shape[0], dtype=np.int64)
    tables = np.zeros((4, 2 * bins), dtype=np.int64)
    packed = np.zeros(bins, dtype=np.int64)
    shared = np.empty(size if multi_label else 0, dtype=np.uint64)
    record_distance = records[0]
    record_counter = records[1]
    for row in range(rows):
        # values = 2 * distance + relevant, in loops simple enough for LLVM to vectorise.
        if words == 1:
            query_word = query_words[row, 0]
            for item in range(size):
                values[item] = 2 * _popcount(query_word ^ database_words[0, item])
        else:
            for item in range(size):
                distance = 0
                for word in range(words):
                    distance += _popcount(query_words[row, word] ^ database_words[word, item])
                values[item] = 2 * distance
        if multi_label:
            query_label = query_label_words[row, 0]
            for item in range(size):
                shared[item] = query_label & database_label_words[0, item]
            for word in range(1, label_words):
                query_label = query_label_words[row, word]
                for item in range(size):
                    shared[item] |= query_label & database_label_words[word, item]
            for item in range(size):
                values[item] += shared[item] != 0
        else:
            query_class = query_classes[row]
            for item in range(size):
                values[item] += query_class == database_classes[item]
        running[:] = 0
        running_relevant[:] = 0
        count = 0
        if histogram_first:
            # Histogram over four tables, to break store-to-load dependencies.
            tables[:] = 0
            unrolled = size - size % 4
            for item in range(0, unrolled, 4):
                tables[0, values[item]] += 1
                tables[1, values[item + 1]] += 1
                tables[2, values[item + 2]] += 1
                tables[3, values[item + 3]] += 1
            for item in range(unrolled, size):
                tables[0, values[item]] += 1
            for distance in range(bins):
                for table in range(4):
                    running[distance] += (
                        tables[table, 2 * distance] + tables[table, 2 * distance + 1]
                    )
                    running_relevant[distance] += tables[table, 2 * distance + 1]
        else:
            count = _count_in_order(
                values, bits, packed, record_distance, record_counter, running, running_relevant
            )
        # Prefix sums: items and relevant items at smaller distances.
        before = 0
        relevant_before = 0
        for distance in range(bins):
            histogram[row, distance] = running[distance]
            relevant_histogram[row, distance] = running_relevant[distance]
            rank_before[distance] = before
            found_before[distance] = relevant_before
            before += running[distance]
            relevant_before += running_relevant[distance]
        if not ranking:
            continue
        # The bucket that holds rank t, for each threshold t: items at smaller distances all
        # rank within t, items at larger distances none, and in that "cut" bucket the first ones.
        last = 0
        is_cut[:] = False
        for column in range(thresholds.shape[0]):
            bucket = 0
            while bucket < bits and rank_before[bucket + 1] < thresholds[column]:
                bucket += 1
            cut_bucket[column] = bucket
            is_cut[bucket] = True
            last = max(last, bucket)
            partial_sum[column] = 0.0
            partial_found[column] = 0
        if histogram_first:
            count = _count_in_order(
                values, last, packed, record_distance, record_counter, running, running_relevant
            )
        # Relevant items in database order: rank = C_<(d) + within + 1 and found = P_<(d) +
        # within_relevant + 1; sum found / rank per distance.
        bucket_sum[:] = 0.0
        for index in range(count):
            distance = np.int64(record_distance[index])
            if distance > last:
                continue
            rank = rank_before[distance] + (record_counter[index] >> 32) + 1
            found = found_before[distance] + (record_counter[index] & _LOW) + 1
            contribution = found / rank
            bucket_sum[distance] += contribution
            if is_cut[distance]:
                for column in range(thresholds.shape[0]):
                    if cut_bucket[column] == distance and rank <= thresholds[column]:
                        partial_sum[column] += contribution
                        partial_found[column] += 1
        for column in range(thresholds.shape[0]):
            total = 0.0
            found = 0
            for distance in range(cut_bucket[column]):
                total += bucket_sum[distance]
                found += relevant_histogram[row, distance]
            total += partial_sum[column]
            found += partial_found[column]
            if column < num_ks:
                ap_sum[row, column] = total
                ap_found[row, column] = found
            else:
                hits[row, column - num_ks] = found


@numba.njit(nogil=True, cache=True)
def _count_in_order(
    values, limit, packed, record_distance, record_counter, running, running_relevant
):
    """The counting pass over the items at distances <= limit, in database order.

    One counter per distance holds ``items met so far << 32 | relevant items met so far``; a
    relevant item's counter when it is met is its position inside its distance bucket, among
    all and among relevant items: recorded with its distance. Returns the number of records;
    ``running`` and ``running_relevant`` receive the final counts for distances <= limit.
    """
    packed[:] = 0
    count = 0
    for item in range(values.shape[0]):
        value = np.int64(values[item])
        distance = value >> 1
        if distance > limit:
            continue
        counter = packed[distance]
        if value & 1:
            packed[distance] = counter + _ITEM_AND_RELEVANT
            record_distance[count] = distance
            record_counter[count] = counter
            count += 1
        else:
            packed[distance] = counter + _ITEM
    for distance in range(limit + 1):
        running[distance] = packed[distance] >> 32
        running_relevant[distance] = packed[distance] & _LOW
    return count

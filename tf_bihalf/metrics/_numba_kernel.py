"""The compiled counting kernel (numba); ``_counting`` documents the algorithm.

Importing this module raises ImportError when numba is not installed; ``_counting`` then uses
its numpy implementation. The kernel is compiled on first use and cached on disk by numba.

Per query:

1. ``values[j] = 2 * d_j + relevant_j`` for every database item (a loop LLVM vectorises);
2. one pass in database order with one counter per distance, *branchless*:
   ``c = counter[d_j]; counter[d_j] = c + step + relevant_j; record[count] = c;
   count += relevant_j``. Every item writes a record, but only a relevant one advances
   ``count``, so the records kept are the relevant items', in database order, each holding its
   distance and how many items and relevant items came earlier at that distance (a branch on
   relevance costs more: it is mispredicted about as often as an item is relevant). The final
   counters are the histograms. Without thresholds (``ties="average"``, the radius metrics)
   the histograms are counted over four tables instead (fewer stores per item); with small
   thresholds (4 k < N) the histograms come first, and the counting pass only handles the items
   at distances that can rank within k (the others are skipped by a branch, mispredicted about
   as often as an item is that near);
3. over the R records only: each relevant item's rank is written at its place among the
   relevant items, ``ranks[found - 1] = rank`` (``found`` and ``rank`` from the prefix sums of
   the histograms and the record), which sorts them without a comparison; the relevant items
   within rank t are then a binary search, and AP@k the sum of ``(i + 1) / ranks[i]`` over
   them, added in rank order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, value):
    """Number of set bits of a uint64 (the CPU's popcount instruction), as int64."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, arguments):
        return builder.ctpop(arguments[0])

    return types.int64(types.uint64), codegen


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _values(
    row,
    query_words,
    database_words,
    multi_label,
    query_classes,
    database_classes,
    query_label_words,
    database_label_words,
    values,
    shared,
):
    """``values[j] = 2 * distance + relevant`` of query ``row`` against every item j."""
    size = database_words.shape[1]
    words = query_words.shape[1]
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
        for word in range(1, query_label_words.shape[1]):
            query_label = query_label_words[row, word]
            for item in range(size):
                shared[item] |= query_label & database_label_words[word, item]
        for item in range(size):
            values[item] += shared[item] != 0
    else:
        query_class = query_classes[row]
        for item in range(size):
            values[item] += query_class == database_classes[item]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _histogram(values, words, bins, tables, running):
    """Items per distance into ``running``, counted over four tables indexed by the value (to
    break store-to-load dependencies); ``tables`` keeps the per-value counts. ``words``: the
    8-bit values read eight at a time (one load instead of eight), or empty."""
    tables[:] = 0
    size = values.shape[0]
    done = 0
    if words.shape[0] > 0:
        done = size - size % 8
        for index in range(done // 8):
            word = words[index]
            for half in range(2):
                base = np.uint64(32 * half)
                tables[0, (word >> base) & np.uint64(255)] += 1
                tables[1, (word >> (base + np.uint64(8))) & np.uint64(255)] += 1
                tables[2, (word >> (base + np.uint64(16))) & np.uint64(255)] += 1
                tables[3, (word >> (base + np.uint64(24))) & np.uint64(255)] += 1
    unrolled = done + (size - done) - (size - done) % 4
    for item in range(done, unrolled, 4):
        tables[0, np.uint64(values[item])] += 1
        tables[1, np.uint64(values[item + 1])] += 1
        tables[2, np.uint64(values[item + 2])] += 1
        tables[3, np.uint64(values[item + 3])] += 1
    for item in range(unrolled, size):
        tables[0, np.uint64(values[item])] += 1
    for distance in range(bins):
        total = 0
        for table in range(4):
            total += tables[table, 2 * distance] + tables[table, 2 * distance + 1]
        running[distance] = total


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _record(values, last, width, shift, counters, records, skip_far):
    """The counting pass of step 2 over the items at distances <= ``last``; returns the number
    of records (relevant items).

    ``counters[d]`` packs ``items met so far at d << (width + shift) | d << width | relevant
    items met so far at d``, so a record (the counter before the item) holds the distance and
    both positions inside the distance bucket. ``skip_far``: items farther than ``last`` are
    skipped by a branch; otherwise ``last`` must be the largest distance (every item counted).
    """
    for distance in range(last + 1):
        counters[distance] = distance << width
    step = np.int64(1) << (width + shift)
    limit = np.uint64(2 * last + 1)
    count = np.uint64(0)
    if skip_far:
        for item in range(values.shape[0]):
            value = np.uint64(values[item])
            if value > limit:
                continue
            relevant = value & np.uint64(1)
            distance = value >> np.uint64(1)
            counter = counters[distance]
            counters[distance] = counter + step + np.int64(relevant)
            records[count] = counter
            count += relevant
    else:
        for item in range(values.shape[0]):
            value = np.uint64(values[item])
            relevant = value & np.uint64(1)
            distance = value >> np.uint64(1)
            counter = counters[distance]
            counters[distance] = counter + step + np.int64(relevant)
            records[count] = counter
            count += relevant
    return np.int64(count)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ranks_in_order(records, count, width, shift, rank_before, found_before, ranks):
    """Places every relevant item's stable rank at its place among the relevant items: the item
    is the ``found``-th relevant one, ``found = P_<(d) + (relevant items met earlier at its
    distance) + 1``, so ``ranks[found - 1] = C_<(d) + (items met earlier at d) + 1``. The result
    is increasing: a counting sort of the R records, without comparisons."""
    low = (np.int64(1) << width) - 1
    distance_mask = (np.int64(1) << shift) - 1
    for index in range(count):
        record = records[index]
        distance = (record >> width) & distance_mask
        position = found_before[distance] + (record & low)
        ranks[position] = rank_before[distance] + (record >> (width + shift)) + 1


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _precisions(ranks, length):
    """``ranks[i] <- (i + 1) / ranks[i]`` for i < length: the precision at each relevant item
    (a loop LLVM vectorises: the divisions dominate it)."""
    for index in range(length):
        ranks[index] = (index + 1) / ranks[index]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _prefix_sum(values, length):
    """``sum(values[:length])`` over four accumulators (independent additions; the order, and so
    the rounding, does not depend on the machine)."""
    sums = np.zeros(4, dtype=np.float64)
    unrolled = length - length % 4
    for index in range(0, unrolled, 4):
        sums[0] += values[index]
        sums[1] += values[index + 1]
        sums[2] += values[index + 2]
        sums[3] += values[index + 3]
    for index in range(unrolled, length):
        sums[0] += values[index]
    return (sums[0] + sums[1]) + (sums[2] + sums[3])


@numba.njit(nogil=True, cache=True, error_model="numpy")
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
    value_words,
    records,
    ranks,
    histogram,
    relevant_histogram,
    ap_sum,
    ap_found,
    hits,
):
    """Fills the ``ChunkStatistics`` arrays of one chunk; see ``_counting.chunk_statistics``.

    Work rows of N: ``values`` (unsigned, 2 * distance + relevant of one query; may be longer
    than N, and ``value_words`` is it as uint64 words when the values are 8-bit, else empty),
    ``records`` (int64: for each relevant item, in database order, its distance and the numbers
    of items and of relevant items met earlier at that distance) and ``ranks`` (float64: the
    relevant items' ranks in increasing order, then the precisions at them).
    """
    rows = query_words.shape[0]
    size = database_words.shape[1]
    bins = bits + 1
    shift = 1
    while (1 << shift) < bins:
        shift += 1
    width = 1
    while (1 << width) <= size:
        width += 1
    low = (np.int64(1) << width) - 1
    running = np.zeros(bins, dtype=np.int64)
    running_relevant = np.zeros(bins, dtype=np.int64)
    found_before = np.empty(bins, dtype=np.int64)
    rank_before = np.empty(bins, dtype=np.int64)
    counters = np.zeros(bins, dtype=np.int64)
    tables = np.zeros((4, 2 * bins), dtype=np.int64)
    shared = np.empty(size if multi_label else 0, dtype=np.uint64)
    items = values[:size]
    ranking = ks.shape[0] + ns.shape[0] > 0
    longest = 0
    for column in range(ks.shape[0]):
        longest = max(longest, ks[column])
    for column in range(ns.shape[0]):
        longest = max(longest, ns[column])
    # Thresholds that reach only a small part of the ranking: count the histogram first, then
    # record only the items at distances that can rank within them.
    near = 4 * longest < size
    for row in range(rows):
        _values(
            row,
            query_words,
            database_words,
            multi_label,
            query_classes,
            database_classes,
            query_label_words,
            database_label_words,
            values,
            shared,
        )
        count = 0
        if ranking and not near:
            count = _record(items, bits, width, shift, counters, records, False)
            for distance in range(bins):
                running[distance] = counters[distance] >> (width + shift)
                running_relevant[distance] = counters[distance] & low
        else:
            _histogram(items, value_words, bins, tables, running)
            for distance in range(bins):
                relevant = 0
                for table in range(4):
                    relevant += tables[table, 2 * distance + 1]
                running_relevant[distance] = relevant
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
        if near:
            last = 0  # the distance bucket holding rank ``longest``
            while last < bits and rank_before[last + 1] < longest:
                last += 1
            count = _record(items, last, width, shift, counters, records, True)
        _ranks_in_order(records, count, width, shift, rank_before, found_before, ranks)
        # The relevant items within rank t: a binary search in the increasing ranks.
        needed = 0
        for column in range(ns.shape[0]):
            hits[row, column] = np.searchsorted(ranks[:count], ns[column], side="right")
        for column in range(ks.shape[0]):
            found = np.searchsorted(ranks[:count], ks[column], side="right")
            ap_found[row, column] = found
            needed = max(needed, found)
        _precisions(ranks, needed)
        for column in range(ks.shape[0]):
            ap_sum[row, column] = _prefix_sum(ranks, ap_found[row, column])

"""Tests for tf_bihalf.metrics against small, obviously-correct reference implementations."""

import itertools

import numpy as np
import pytest

from tf_bihalf import metrics
from tf_bihalf.metrics import retrieval

# ---------------------------------------------------------------------------------------------
# Obviously-correct references: Python loops, a full stable sort per query.


def naive_distances(query, database):
    return [[int(np.sum(q != x)) for x in database] for q in query]


def naive_relevant(query_label, database_label):
    query_label = np.asarray(query_label)
    if query_label.ndim == 0:
        return bool(query_label == database_label)
    return bool(np.sum(query_label * np.asarray(database_label)) > 0)


def naive_ap_of_order(relevance):
    found, total = 0, 0.0
    for rank, relevant in enumerate(relevance, start=1):
        if relevant:
            found += 1
            total += found / rank
    return total / found if found else 0.0


def naive_stable_ranking(query, database, query_labels, database_labels):
    """Per query, the relevance list in (distance, index) order."""
    rankings = []
    for i, row in enumerate(naive_distances(query, database)):
        order = sorted(range(len(database)), key=lambda j, row=row: (row[j], j))
        rankings.append([naive_relevant(query_labels[i], database_labels[j]) for j in order])
    return rankings


def naive_map(query, database, query_labels, database_labels, top_k=None):
    rankings = naive_stable_ranking(query, database, query_labels, database_labels)
    k = len(database) if top_k is None else top_k
    return float(np.mean([naive_ap_of_order(ranking[:k]) for ranking in rankings]))


def enumerate_tie_orders(query, database, query_labels, database_labels, metric):
    """Exact expectation of metric(relevance list) over all orders within each distance."""
    values = []
    for i, row in enumerate(naive_distances(query, database)):
        buckets = {}
        for j, distance in enumerate(row):
            buckets.setdefault(distance, []).append(
                naive_relevant(query_labels[i], database_labels[j])
            )
        bucket_orders = [
            list(itertools.permutations(buckets[distance])) for distance in sorted(buckets)
        ]
        outcomes = [
            metric(sum((list(part) for part in choice), []))
            for choice in itertools.product(*bucket_orders)
        ]
        values.append(np.mean(outcomes))
    return float(np.mean(values))


def random_problem(rng, num_queries, num_database, bits, num_classes, multi_label=False):
    query = rng.choice([-1, 1], size=(num_queries, bits)).astype(np.int8)
    database = rng.choice([-1, 1], size=(num_database, bits)).astype(np.int8)
    if multi_label:
        query_labels = (rng.random((num_queries, num_classes)) < 0.2).astype(np.uint8)
        database_labels = (rng.random((num_database, num_classes)) < 0.2).astype(np.uint8)
    else:
        query_labels = rng.integers(0, num_classes, num_queries)
        database_labels = rng.integers(0, num_classes, num_database)
    return query, database, query_labels, database_labels


@pytest.fixture
def small_chunks(monkeypatch):
    """Forces several query chunks (with a partial last one) and two worker threads."""
    monkeypatch.setattr(retrieval, "_CHUNK_PAIRS", 3 * 50)
    monkeypatch.setattr(retrieval, "_CHUNK_PAIRS_COMPILED", 3 * 50)


# ---------------------------------------------------------------------------------------------
# mAP, ties="stable"


def test_map_hand_computed_example():
    # Distances 1, 0, 1, 1; relevance 1, 0, 0, 1. Stable order: items 1, 0, 2, 3.
    database = np.array([[1, -1], [1, 1], [-1, 1], [1, -1]])
    query = np.array([[1, 1]])
    args = (query, database, [0], [0, 1, 1, 0])
    assert metrics.mean_average_precision(*args) == pytest.approx(0.5)
    assert metrics.mean_average_precision(*args, top_k=1) == 0.0
    assert metrics.mean_average_precision(*args, top_k=2) == pytest.approx(0.5)  # 1/2 at rank 2
    assert metrics.mean_average_precision(*args, top_k=3) == pytest.approx(0.5)
    # Moving the relevant item of index 3 to index 2 changes the stable answer: 1/2 + 2/3.
    assert metrics.mean_average_precision(query, database, [0], [0, 1, 0, 1]) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )


@pytest.mark.parametrize("bits", [8, 13, 64, 100])
@pytest.mark.parametrize("top_k", [None, 1, 7, 40, 500])
def test_map_matches_naive_single_label(bits, top_k, small_chunks):
    rng = np.random.default_rng(bits * 1000 + (top_k or 0))
    # Few bits relative to the database size gives many ties, which the stable rule must order.
    problem = random_problem(rng, 9, 120, bits, num_classes=4)
    got = metrics.mean_average_precision(*problem, top_k=top_k, num_threads=2)
    assert got == pytest.approx(naive_map(*problem, top_k=top_k), abs=1e-12)


def test_map_matches_naive_with_many_ties_and_unrelated_queries(small_chunks):
    rng = np.random.default_rng(3)
    query, database, query_labels, database_labels = random_problem(rng, 12, 90, 3, num_classes=5)
    query_labels[:4] = 99  # no relevant item in the database: AP 0, still counted
    for top_k in (None, 5, 30):
        got = metrics.average_precision(query, database, query_labels, database_labels, top_k=top_k)
        assert np.all(got[:4] == 0.0)
        expected = naive_map(query, database, query_labels, database_labels, top_k)
        assert got.mean() == pytest.approx(expected, abs=1e-12)


def test_map_matches_naive_multi_label(small_chunks):
    rng = np.random.default_rng(4)
    problem = random_problem(rng, 10, 80, 12, num_classes=70, multi_label=True)
    problem[2][0] = 0  # a query without any label has no relevant item
    for top_k in (None, 10):
        got = metrics.mean_average_precision(*problem, top_k=top_k, num_threads=2)
        assert got == pytest.approx(naive_map(*problem, top_k=top_k), abs=1e-12)


def test_map_all_equal_codes_follows_database_order():
    database = np.ones((6, 16))
    query = np.ones((1, 16))
    labels = np.array([0, 1, 1, 0, 1, 0])
    # Every distance is 0: the ranking is the database order, relevance 1 0 0 1 0 1.
    expected = (1 / 1 + 2 / 4 + 3 / 6) / 3
    assert metrics.mean_average_precision(query, database, [0], labels) == pytest.approx(expected)
    # Tie average: each of 3 relevant items among 6 is anywhere; exact expectation by enumeration.
    exact = enumerate_tie_orders(query, database, [0], labels, naive_ap_of_order)
    average = metrics.mean_average_precision(query, database, [0], labels, ties="average")
    assert average == pytest.approx(exact, abs=1e-12)


def test_code_and_label_forms_give_identical_results():
    rng = np.random.default_rng(5)
    query, database, query_labels, database_labels = random_problem(rng, 7, 60, 13, num_classes=3)
    reference = metrics.mean_average_precision(query, database, query_labels, database_labels)
    packed_query = np.packbits(query > 0, axis=1)
    packed_database = np.packbits(database > 0, axis=1)
    packed_database[:, -1] |= 0b00000111  # garbage in the 3 padding bits must be ignored
    one_hot_query = np.eye(3, dtype=np.float32)[query_labels]
    one_hot_database = np.eye(3, dtype=bool)[database_labels]
    forms = [
        (
            query.astype(np.float32),
            database.astype(np.float64),
            query_labels,
            database_labels,
            None,
        ),
        ((query > 0).astype(np.int32), database > 0, query_labels, database_labels, None),
        (packed_query, packed_database, query_labels, database_labels, 13),
        (query, database, one_hot_query, one_hot_database, None),
        (query, database, query_labels.astype(np.float32), database_labels, 13),
    ]
    for query_form, database_form, query_label_form, database_label_form, bits in forms:
        got = metrics.mean_average_precision(
            query_form, database_form, query_label_form, database_label_form, bits=bits
        )
        assert got == reference


def test_absent_classes_have_no_relevant_item():
    rng = np.random.default_rng(7)
    query, database, query_labels, database_labels = random_problem(rng, 20, 70, 7, num_classes=4)
    query_labels[:3] = [-1, 17, 4]  # classes absent from the database
    got = metrics.average_precision(query, database, query_labels, database_labels, top_k=30)
    assert np.all(got[:3] == 0.0)
    assert got.mean() == pytest.approx(
        naive_map(query, database, query_labels, database_labels, top_k=30), abs=1e-12
    )


def test_thread_count_and_chunking_do_not_change_results(small_chunks):
    rng = np.random.default_rng(6)
    problem = random_problem(rng, 31, 50, 10, num_classes=3)
    one = metrics.average_precision(*problem, top_k=20, num_threads=1)
    two = metrics.average_precision(*problem, top_k=20, num_threads=2)
    np.testing.assert_array_equal(one, two)


# ---------------------------------------------------------------------------------------------
# mAP, ties="average"


def test_average_ties_hand_computed():
    database = np.array([[1, -1], [1, 1], [-1, 1], [1, -1]])
    query = np.array([[1, 1]])
    # Distance-1 bucket holds relevance {1, 0, 1} in any order after one irrelevant item:
    # patterns 110 -> (1/2 + 2/3)/2, 101 -> (1/2 + 2/4)/2, 011 -> (1/3 + 2/4)/2.
    expected_all = ((1 / 2 + 2 / 3) + (1 / 2 + 2 / 4) + (1 / 3 + 2 / 4)) / 2 / 3
    got = metrics.mean_average_precision(query, database, [0], [0, 1, 1, 0], ties="average")
    assert got == pytest.approx(expected_all, abs=1e-15)
    # Top 2: the second item is relevant with probability 2/3, and then AP@2 = 1/2.
    got_2 = metrics.mean_average_precision(
        query, database, [0], [0, 1, 1, 0], top_k=2, ties="average"
    )
    assert got_2 == pytest.approx(2 / 3 * 1 / 2, abs=1e-15)


@pytest.mark.parametrize("top_k", [None, 1, 2, 3, 5, 8])
def test_average_ties_equals_exact_enumeration(top_k):
    rng = np.random.default_rng(10 + (top_k or 0))
    query, database, query_labels, database_labels = random_problem(rng, 4, 9, 2, num_classes=2)
    query_labels[0] = 7  # no relevant item
    k = top_k or len(database)
    exact = enumerate_tie_orders(
        query,
        database,
        query_labels,
        database_labels,
        lambda ranking: naive_ap_of_order(ranking[:k]),
    )
    got = metrics.mean_average_precision(
        query, database, query_labels, database_labels, top_k=top_k, ties="average"
    )
    assert got == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("top_k", [None, 25])
def test_average_ties_equals_monte_carlo_mean(top_k, small_chunks):
    rng = np.random.default_rng(20)
    query, database, query_labels, database_labels = random_problem(rng, 6, 80, 4, num_classes=3)
    distances = np.array(naive_distances(query, database))
    relevance = query_labels[:, None] == database_labels[None, :]
    k = top_k or database.shape[0]
    trials = 3000
    samples = np.empty((trials, len(query)))
    for trial in range(trials):
        tie_breaker = rng.random(distances.shape)
        for i in range(len(query)):
            order = np.lexsort((tie_breaker[i], distances[i]))
            samples[trial, i] = naive_ap_of_order(relevance[i, order][:k])
    monte_carlo = samples.mean()
    standard_error = samples.mean(axis=1).std() / np.sqrt(trials)
    got = metrics.mean_average_precision(
        query, database, query_labels, database_labels, top_k=top_k, ties="average"
    )
    assert abs(got - monte_carlo) < 5 * standard_error + 1e-12
    # The tie rule matters here (many ties), so the stable value is a different number.
    stable = metrics.mean_average_precision(
        query, database, query_labels, database_labels, top_k=top_k
    )
    assert abs(stable - got) > 5 * standard_error


def test_average_ties_equal_stable_when_no_ties():
    # Distinct distances 0..5 to the query: no ties, both rules agree.
    database = np.array([[1] * (5 - d) + [-1] * d for d in (3, 0, 5, 1, 4, 2)])
    query = np.ones((1, 5))
    labels = np.array([1, 0, 1, 1, 0, 0])
    for top_k in (None, 2, 4):
        stable = metrics.mean_average_precision(query, database, [1], labels, top_k=top_k)
        average = metrics.mean_average_precision(
            query, database, [1], labels, top_k=top_k, ties="average"
        )
        assert average == pytest.approx(stable, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# Precision curves


def test_precision_at_n_matches_naive(small_chunks):
    rng = np.random.default_rng(30)
    problem = random_problem(rng, 8, 70, 6, num_classes=3)
    ns = [1, 2, 10, 33, 70]
    rankings = naive_stable_ranking(*problem)
    expected = [np.mean([np.sum(r[:n]) / n for r in rankings]) for n in ns]
    got = metrics.precision_at_n(*problem, ns=ns, num_threads=2)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert metrics.precision_at_n(*problem, ns=10) == pytest.approx(expected[2])


def test_precision_at_n_average_ties_equals_enumeration():
    rng = np.random.default_rng(31)
    problem = random_problem(rng, 3, 8, 2, num_classes=2)
    for n in (1, 3, 6):
        exact = enumerate_tie_orders(*problem, lambda ranking, n=n: np.sum(ranking[:n]) / n)
        got = metrics.precision_at_n(*problem, ns=[n], ties="average")
        assert got[0] == pytest.approx(exact, abs=1e-12)


def test_precision_recall_curve_matches_naive(small_chunks):
    rng = np.random.default_rng(32)
    query, database, query_labels, database_labels = random_problem(rng, 10, 50, 9, num_classes=4)
    query_labels[0] = 9  # no relevant item: recall 0, counted
    distances = naive_distances(query, database)
    precision, recall, precision_skip = [], [], []
    for radius in range(10):
        per_query_precision, per_query_recall = [], []
        for i in range(len(query)):
            retrieved = [j for j in range(len(database)) if distances[i][j] <= radius]
            hits = sum(naive_relevant(query_labels[i], database_labels[j]) for j in retrieved)
            total = sum(naive_relevant(query_labels[i], label) for label in database_labels)
            per_query_precision.append(hits / len(retrieved) if retrieved else None)
            per_query_recall.append(hits / total if total else 0.0)
        precision.append(np.mean([p or 0.0 for p in per_query_precision]))
        answered = [p for p in per_query_precision if p is not None]
        precision_skip.append(np.mean(answered) if answered else np.nan)
        recall.append(np.mean(per_query_recall))
    curve = metrics.precision_recall_curve(query, database, query_labels, database_labels)
    np.testing.assert_array_equal(curve["radius"], np.arange(10))
    np.testing.assert_allclose(curve["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(curve["recall"], recall, atol=1e-12)
    assert curve["recall"][-1] == pytest.approx(0.9)  # everything retrieved; query 0 scores 0
    skip = metrics.precision_recall_curve(
        query, database, query_labels, database_labels, empty="skip"
    )
    np.testing.assert_allclose(skip["precision"], precision_skip, atol=1e-12)
    for radius in (0, 2, 5):
        got = metrics.precision_within_radius(
            query, database, query_labels, database_labels, radius=radius
        )
        assert got == pytest.approx(precision[radius], abs=1e-12)


def test_precision_within_radius_hand_computed():
    database = np.array([[1, -1], [1, 1], [-1, 1], [1, -1]])
    args = (np.array([[1, 1], [-1, -1]]), database, [0, 1], [0, 0, 1, 0])
    # Query 0 (distances 1, 0, 1, 1): radius 0 retrieves item 1, relevant -> 1. Query 1
    # (distances 1, 2, 1, 1): nothing within radius 0 -> 0 with empty="zero", left out with
    # empty="skip".
    assert metrics.precision_within_radius(*args, radius=0) == pytest.approx(0.5)
    assert metrics.precision_within_radius(*args, radius=0, empty="skip") == pytest.approx(1.0)
    # Radius 1: query 0 gets everything (3 of 4 relevant), query 1 gets items 0, 2, 3 (item 2).
    assert metrics.precision_within_radius(*args, radius=1) == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert metrics.precision_within_radius(*args) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert np.isnan(
        metrics.precision_within_radius(args[0][1:], database, [1], args[3], radius=0, empty="skip")
    )


# ---------------------------------------------------------------------------------------------
# Bit statistics


def test_bit_statistics_hand_values():
    codes = np.array([[1, 1, -1, 1], [1, -1, -1, 1], [-1, 1, -1, -1], [-1, -1, -1, 1]])
    np.testing.assert_allclose(metrics.bit_balance(codes), [0.5, 0.5, 0.0, 0.75])
    per_bit, mean = metrics.bit_entropy(codes)
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    np.testing.assert_allclose(per_bit, [1.0, 1.0, 0.0, h])
    assert mean == pytest.approx((2 + h) / 4)
    correlation = metrics.bit_correlation(codes)
    # Bits 0 and 3: E[b0 b3] = 2/4, p0 p3 = 3/8, so (1/2 - 3/8) / sqrt(1/4 * 3/16) = 1/sqrt(3).
    expected = np.array(
        [
            [1.0, 0.0, 0.0, 1 / np.sqrt(3)],
            [0.0, 1.0, 0.0, -1 / np.sqrt(3)],
            [0.0, 0.0, 1.0, 0.0],
            [1 / np.sqrt(3), -1 / np.sqrt(3), 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(correlation, expected, atol=1e-12)
    packed = np.packbits(codes > 0, axis=1)
    np.testing.assert_allclose(metrics.bit_balance(packed, bits=4), [0.5, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(
        metrics.bit_correlation((codes > 0).astype(np.uint8)), expected, atol=1e-12
    )


def test_bit_correlation_matches_numpy_for_non_constant_bits():
    rng = np.random.default_rng(40)
    codes = rng.choice([-1, 1], size=(200, 10))
    codes[:, 3] = codes[:, 1]  # perfectly correlated pair
    codes[:, 4] = -codes[:, 2]  # perfectly anti-correlated pair
    np.testing.assert_allclose(metrics.bit_correlation(codes), np.corrcoef(codes.T), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(50)
    query, database, query_labels, database_labels = random_problem(rng, 3, 10, 16, num_classes=2)
    good = dict(
        query_codes=query,
        database_codes=database,
        query_labels=query_labels,
        database_labels=database_labels,
    )

    def fails(match, function=metrics.mean_average_precision, **changes):
        with pytest.raises(ValueError, match=match):
            function(**{**good, **changes})

    fails("8 bits but database codes have 16", query_codes=query[:, :8])
    fails("database is empty", database_codes=database[:0], database_labels=database_labels[:0])
    fails("no query codes", query_codes=query[:0], query_labels=query_labels[:0])
    fails("must be uint8", query_codes=np.packbits(query > 0, axis=1).astype(np.int64), bits=16)
    fails("looks like packed", query_codes=np.packbits(query > 0, axis=1))
    fails("matches neither", query_codes=query, bits=12)
    fails("±1 codes or", query_codes=query * 0.5)
    fails("2-D array", query_codes=query[0])
    fails("top_k must be a positive integer", top_k=0)
    fails("top_k must be a positive integer", top_k=-3)
    fails("ties must be one of", ties="random")
    fails("same kind", query_labels=np.eye(2)[query_labels])
    fails("rows but there are 3 queries", query_labels=query_labels[:2])
    fails("must be integers", query_labels=query_labels + 0.5)
    fails(
        "values must be 0 or 1",
        query_labels=np.eye(2)[query_labels] * 2,
        database_labels=np.eye(2)[database_labels],
    )
    fails("bits must be a positive integer", bits=0)
    fails("ns must be integers between 1", function=metrics.precision_at_n, ns=[0, 3])
    fails("ns must be integers between 1", function=metrics.precision_at_n, ns=[11])
    fails("radius must be", function=metrics.precision_within_radius, radius=-1)
    fails("empty must be one of", function=metrics.precision_recall_curve, empty="nan")
    with pytest.raises(ValueError, match="zero rows"):
        metrics.bit_balance(np.zeros((0, 8)))


def test_docstring_examples():
    import doctest

    from tf_bihalf.metrics import bits

    for module in (retrieval, bits):
        result = doctest.testmod(module, extraglobs={"np": np})
        assert result.attempted > 0 and result.failed == 0, module.__name__

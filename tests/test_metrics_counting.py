"""The counting formulation of the stable ranking (both implementations) and the one-pass
``retrieval_report``, against obviously-correct references: per query, sort the database by
(distance, index) with Python's ``sorted`` and walk the ranking."""

import numpy as np
import pytest

from tf_bihalf import metrics
from tf_bihalf.metrics import _counting, retrieval

# ---------------------------------------------------------------------------------------------
# References


def reference_rankings(query_bits, database_bits, relevance):
    """Per query, the relevance list in (distance, index) order; codes as {0,1} arrays."""
    rankings = []
    for i, query in enumerate(query_bits):
        distances = [int(np.sum(query != item)) for item in database_bits]
        order = sorted(range(len(database_bits)), key=lambda j: (distances[j], j))
        rankings.append([bool(relevance[i][j]) for j in order])
    return rankings


def reference_ap(ranking, k):
    found, total = 0, 0.0
    for rank, relevant in enumerate(ranking[:k], start=1):
        if relevant:
            found += 1
            total += found / rank
    return total / found if found else 0.0


def reference_relevance(query_labels, database_labels):
    query_labels, database_labels = np.asarray(query_labels), np.asarray(database_labels)
    if query_labels.ndim == 1:
        return query_labels[:, None] == database_labels[None, :]
    return (query_labels.astype(int) @ database_labels.T.astype(int)) > 0


def make_problem(seed, num_queries, num_database, bits, labels="class", tie_heavy=False):
    """{0,1} codes and labels; tie_heavy draws codes from a few prototypes (many equal
    distances, long runs of equal codes)."""
    rng = np.random.default_rng(seed)
    if tie_heavy:
        prototypes = rng.integers(0, 2, (3, bits))
        query = prototypes[rng.integers(0, 3, num_queries)]
        database = prototypes[rng.integers(0, 3, num_database)]
        database[rng.random(database.shape) < 0.05] ^= 1
    else:
        query = rng.integers(0, 2, (num_queries, bits))
        database = rng.integers(0, 2, (num_database, bits))
    if labels == "class":
        query_labels = rng.integers(0, 4, num_queries)
        database_labels = rng.integers(0, 4, num_database)
        query_labels[0] = 99  # a class absent from the database: no relevant item
    else:
        classes = 70 if labels == "multi" else 3
        query_labels = (rng.random((num_queries, classes)) < 0.1).astype(np.uint8)
        database_labels = (rng.random((num_database, classes)) < 0.1).astype(np.uint8)
        query_labels[0] = 0  # no label: no relevant item
    return query, database, query_labels, database_labels


@pytest.fixture(params=["numba", "numpy"])
def implementation(request, monkeypatch):
    """Runs a test with each implementation of the counting kernel."""
    if request.param == "numba":
        pytest.importorskip("numba")
        monkeypatch.setattr(_counting, "_KERNEL", None)
        monkeypatch.delenv("TF_BIHALF_NUMBA", raising=False)
    else:
        monkeypatch.setattr(_counting, "_KERNEL", False)
    assert _counting.backend() == request.param
    return request.param


@pytest.fixture
def small_chunks(monkeypatch):
    """Several query chunks per call, with a partial last one."""
    monkeypatch.setattr(retrieval, "_CHUNK_PAIRS", 3 * 40)
    monkeypatch.setattr(retrieval, "_CHUNK_PAIRS_COMPILED", 3 * 40)


# ---------------------------------------------------------------------------------------------
# Stable AP@k and P@N by counting


@pytest.mark.parametrize(
    "bits,labels,tie_heavy",
    [
        (2, "class", False),  # 3 distances for 40 items: every bucket is a long tie
        (13, "class", True),
        (64, "multi", False),  # one code word, two label words
        (100, "class", False),  # two code words
        (130, "few", True),  # 2K+1 > 255: 16-bit work values
    ],
)
def test_stable_ap_matches_sorted_reference(implementation, small_chunks, bits, labels, tie_heavy):
    query, database, query_labels, database_labels = make_problem(
        bits, 11, 40, bits, labels, tie_heavy
    )
    rankings = reference_rankings(
        query, database, reference_relevance(query_labels, database_labels)
    )
    for top_k in (None, 1, 2, 7, 39, 40, 1000):
        k = len(database) if top_k is None else top_k
        expected = [reference_ap(ranking, k) for ranking in rankings]
        got = metrics.average_precision(
            query, database, query_labels, database_labels, top_k=top_k, num_threads=2
        )
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert got[0] == 0.0  # the query without relevant items scores 0 and counts


def test_precision_at_n_matches_sorted_reference(implementation, small_chunks):
    query, database, query_labels, database_labels = make_problem(1, 9, 50, 5, "multi", True)
    rankings = reference_rankings(
        query, database, reference_relevance(query_labels, database_labels)
    )
    ns = [1, 3, 17, 49, 50]
    expected = [np.mean([sum(ranking[:n]) / n for ranking in rankings]) for n in ns]
    got = metrics.precision_at_n(query, database, query_labels, database_labels, ns=ns)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_code_forms_give_identical_results(implementation):
    query, database, query_labels, database_labels = make_problem(2, 6, 30, 11)
    signs = 2 * query - 1, 2 * database - 1
    packed = np.packbits(query, axis=1), np.packbits(database, axis=1)
    values = [
        metrics.average_precision(*codes, query_labels, database_labels, top_k=9, bits=bits)
        for codes, bits in [((query, database), None), (signs, None), (packed, 11)]
    ]
    np.testing.assert_array_equal(values[0], values[1])
    np.testing.assert_array_equal(values[0], values[2])


def test_numba_and_numpy_agree(monkeypatch):
    pytest.importorskip("numba")
    query, database, query_labels, database_labels = make_problem(3, 40, 300, 16, "multi", True)
    problem = retrieval._Problem(query, database, query_labels, database_labels, None, 1)
    ks, ns = np.array([1, 50, 300]), np.array([10, 299])
    results = {}
    for use_numba in (True, False):
        problem.use_numba = use_numba
        problem._local = retrieval.threading.local()
        results[use_numba] = problem.statistics(0, problem.num_queries, ks, ns)
    compiled, plain = results[True], results[False]
    np.testing.assert_array_equal(compiled.histogram, plain.histogram)
    np.testing.assert_array_equal(compiled.relevant_histogram, plain.relevant_histogram)
    np.testing.assert_array_equal(compiled.ap_found, plain.ap_found)
    np.testing.assert_array_equal(compiled.hits, plain.hits)
    np.testing.assert_allclose(compiled.ap_sum, plain.ap_sum, rtol=1e-14, atol=0)
    assert compiled.histogram.sum() == 40 * 300


def test_small_k_path_equals_full_pass():
    """With 4k < N the kernel counts the histogram first and records only the items near
    enough to rank within k; asking for k = N as well forces the full counting pass. Both must
    give the same AP@k, hit counts and histograms."""
    pytest.importorskip("numba")
    for seed, labels in ((8, "class"), (9, "multi")):
        query, database, query_labels, database_labels = make_problem(
            seed, 12, 400, 24, labels, True
        )
        problem = retrieval._Problem(query, database, query_labels, database_labels, None, 1)
        assert problem.use_numba
        ks, ns = np.array([1, 7, 60]), np.array([3, 99])
        near = problem.statistics(0, problem.num_queries, ks, ns)
        full = problem.statistics(0, problem.num_queries, np.append(ks, 400), ns)
        np.testing.assert_array_equal(near.histogram, full.histogram)
        np.testing.assert_array_equal(near.relevant_histogram, full.relevant_histogram)
        np.testing.assert_array_equal(near.ap_found, full.ap_found[:, :3])
        np.testing.assert_array_equal(near.hits, full.hits)
        np.testing.assert_array_equal(near.ap_sum, full.ap_sum[:, :3])
        assert (full.ap_found[:, 3] == full.relevant_histogram.sum(axis=1)).all()


def test_kernel_fits_bounds_the_packed_counters():
    # Two counts up to N and a distance up to K share one int64.
    assert _counting.kernel_fits(60_000, 64)
    assert _counting.kernel_fits((1 << 28) - 1, 64)
    assert not _counting.kernel_fits(1 << 28, 64)
    assert not _counting.kernel_fits(1 << 31, 8)


@pytest.mark.parametrize("num_classes", [3, 300])  # int8 and int16 dense ids
def test_class_ids_any_integers(implementation, num_classes):
    """Class ids are renumbered densely inside; any integer ids (negative, beyond 32 bits, as
    integral floats, query classes absent from the database) give the reference values."""
    rng = np.random.default_rng(10)
    query = rng.integers(0, 2, (15, 12))
    database = rng.integers(0, 2, (400, 12))
    query_labels = rng.integers(0, num_classes + 2, 15)  # some classes only among the queries
    database_labels = rng.integers(0, num_classes, 400)
    relevance = query_labels[:, None] == database_labels[None, :]
    rankings = reference_rankings(query, database, relevance)
    expected = [reference_ap(ranking, 400) for ranking in rankings]
    for mapping in (
        lambda ids: ids,
        lambda ids: 10**12 - 7 * ids,  # negative steps, beyond 32 bits
        lambda ids: ids.astype(np.float64) - 50.0,
    ):
        got = metrics.average_precision(
            query, database, mapping(query_labels), mapping(database_labels)
        )
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    prepared = retrieval._prepare_labels(query_labels, database_labels, 15, 400)
    assert prepared.database.itemsize == (1 if np.unique(database_labels).size < 128 else 2)
    absent = ~np.isin(query_labels, database_labels)
    assert absent.any() and (prepared.query[absent] == -1).all()


def test_numba_can_be_disabled(monkeypatch):
    monkeypatch.setattr(_counting, "_KERNEL", None)
    monkeypatch.setenv("TF_BIHALF_NUMBA", "0")
    assert _counting.backend() == "numpy"


def test_memory_bound_of_a_chunk(implementation):
    query, database, query_labels, database_labels = make_problem(4, 50, 20_000, 8)
    problem = retrieval._Problem(query, database, query_labels, database_labels, None, 1)
    pairs = retrieval._CHUNK_PAIRS_COMPILED if implementation == "numba" else retrieval._CHUNK_PAIRS
    assert problem.chunk_rows * problem.num_database <= max(pairs, problem.num_database)
    problem.statistics(0, problem.chunk_rows, ks=[100])
    buffers = problem._buffers()
    if implementation == "numba":
        # Only per-database-item rows: no (query x database) array.
        assert all(array.shape[-1] == 20_000 and array.ndim == 2 for array in buffers.values())
        assert all(array.shape[0] <= 2 for array in buffers.values())
    else:
        assert all(array.size <= max(retrieval._CHUNK_PAIRS, 20_000) for array in buffers.values())


# ---------------------------------------------------------------------------------------------
# retrieval_report


@pytest.mark.parametrize("ties", ["stable", "average"])
@pytest.mark.parametrize("labels", ["class", "multi"])
def test_report_equals_separate_functions_exactly(implementation, small_chunks, ties, labels):
    query, database, query_labels, database_labels = make_problem(5, 13, 60, 6, labels, True)
    arguments = (query, database, query_labels, database_labels)
    for empty in ("zero", "skip"):
        report = metrics.retrieval_report(
            *arguments,
            top_ks=(None, 5, 60, 100),
            precision_ns=(1, 10, 60, 61, 1000),
            radius=1,
            ties=ties,
            empty=empty,
            num_threads=2,
        )
        assert report["ties"] == ties
        assert list(report["map_at_k"]) == ["All", "5", "60", "100"]
        for name, top_k in (("All", None), ("5", 5), ("60", 60), ("100", 100)):
            assert report["map_at_k"][name] == metrics.mean_average_precision(
                *arguments, top_k=top_k, ties=ties
            )
            assert report["map_ties_average_at_k"][name] == metrics.mean_average_precision(
                *arguments, top_k=top_k, ties="average"
            )
        assert report["precision_at_n"]["n"] == [1, 10, 60]  # 61 and 1000 exceed N = 60
        assert report["precision_at_n"]["precision"] == (
            metrics.precision_at_n(*arguments, ns=[1, 10, 60], ties=ties).tolist()
        )
        curve = metrics.precision_recall_curve(*arguments, empty=empty)
        for key in ("radius", "precision", "recall", "retrieved"):
            np.testing.assert_array_equal(report["pr_curve"][key], curve[key])
        within = metrics.precision_within_radius(*arguments, radius=1, empty=empty)
        assert report["precision_within_radius"] == {"radius": 1, "precision": within}


def test_report_against_reference_and_options(implementation):
    query, database, query_labels, database_labels = make_problem(6, 8, 25, 4, "class", True)
    rankings = reference_rankings(
        query, database, reference_relevance(query_labels, database_labels)
    )
    report = metrics.retrieval_report(
        query,
        database,
        query_labels,
        database_labels,
        top_ks=(3,),
        precision_ns=(2,),
        radius=99,
        also_average_ties=False,
    )
    assert "map_ties_average_at_k" not in report
    no_curve = metrics.retrieval_report(
        query, database, query_labels, database_labels, top_ks=(3,), precision_ns=()
    )
    assert no_curve["precision_at_n"] == {"n": [], "precision": []}
    assert no_curve["map_at_k"] == report["map_at_k"]
    assert report["map_at_k"]["3"] == pytest.approx(
        np.mean([reference_ap(ranking, 3) for ranking in rankings]), abs=1e-12
    )
    assert report["precision_at_n"]["precision"][0] == pytest.approx(
        np.mean([sum(ranking[:2]) / 2 for ranking in rankings]), abs=1e-12
    )
    # Radius clipped to K = 4: everything is retrieved, recall 1 for queries with a relevant item.
    assert report["precision_within_radius"]["radius"] == 4
    assert report["pr_curve"]["retrieved"][-1] == 25
    has_relevant = [any(ranking) for ranking in rankings]
    assert report["pr_curve"]["recall"][-1] == pytest.approx(np.mean(has_relevant))


def test_report_bad_arguments():
    query, database, query_labels, database_labels = make_problem(7, 3, 10, 8)
    arguments = (query, database, query_labels, database_labels)
    with pytest.raises(ValueError, match="top_ks must be a non-empty sequence"):
        metrics.retrieval_report(*arguments, top_ks=())
    with pytest.raises(ValueError, match="top_ks must be a non-empty sequence"):
        metrics.retrieval_report(*arguments, top_ks=None)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        metrics.retrieval_report(*arguments, top_ks=(0,))
    with pytest.raises(ValueError, match="ns must be integers"):
        metrics.retrieval_report(*arguments, precision_ns=(0, 5))
    with pytest.raises(ValueError, match="ties must be one of"):
        metrics.retrieval_report(*arguments, ties="random")
    with pytest.raises(ValueError, match="radius must be"):
        metrics.retrieval_report(*arguments, radius=-1)
    with pytest.raises(ValueError, match="empty must be one of"):
        metrics.retrieval_report(*arguments, empty="nan")

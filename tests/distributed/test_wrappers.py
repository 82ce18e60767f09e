"""Distributed training on CPU processes (gloo): DDP, FSDP2, ZeroRedundancyOptimizer, and
DCP checkpoints saved on 2 ranks and loaded on 1 and 4, between torch's optimizer and ours.

Three worlds per run (worlds.py starts them, each under a hard timeout; scenarios.py is
what their ranks run): 2 ranks train and save, then 1 rank and 4 ranks load. Each test
checks its scenario's reports, bitwise against one process stepping plain tensors. A
world's ranks are judged by what they reported, not by their exit status alone (gloo's
teardown at exit sometimes crashes after everything reported: worlds.py warns of it).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

import scenarios  # noqa: E402
from scenarios import CHECKPOINTED, PATHS  # noqa: E402
from worlds import run_world  # noqa: E402

from rmsprop.torch._fused import why_not_on  # noqa: E402

NO_FUSED = why_not_on("cpu")
NO_FSDP2 = scenarios.why_no_fsdp2()
needs_fsdp2 = pytest.mark.skipif(bool(NO_FSDP2), reason=NO_FSDP2 or "FSDP2 is here")
TRAINED = [
    name
    for name in scenarios.SCENARIOS
    if name.startswith(("ddp-", "fsdp2-", "zero-"))
    and not (NO_FUSED and "fused" in name)
    and not (NO_FSDP2 and "fsdp2" in name)
]
# The checkpoints are of FSDP2 models: resharding is what DCP does with their DTensors.
SAVED = [] if NO_FSDP2 else [f"dcp-save-{n}" for n in (*CHECKPOINTED, "torch", "ours-for-torch")]
LOADED = [] if NO_FSDP2 else [f"dcp-load-{name}" for name in CHECKPOINTED]
MIGRATED = [] if NO_FSDP2 else ["dcp-load-torch-into-ours", "dcp-load-ours-into-torch"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def two_ranks(shared):
    return run_world(2, [*TRAINED, *SAVED], shared)


@pytest.fixture(scope="module")
def one_rank(shared, two_ranks):  # (loads what two_ranks saved)
    return run_world(1, [*LOADED, *MIGRATED], shared)


@pytest.fixture(scope="module")
def four_ranks(shared, two_ranks):
    return run_world(4, LOADED, shared)


def assert_same(actual, expected, what=""):
    """Bitwise equal, through dicts of tensors."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), what
        for key in expected:
            assert_same(actual[key], expected[key], f"{what}.{key}")
    else:
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), what


def fused_needed(path):
    if path == "fused" and NO_FUSED:
        pytest.skip(f"no fused CPU kernel here: {NO_FUSED}")


# ---- DDP, FSDP2, ZeRO: bitwise one process ---------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_ddp(two_ranks, path):
    fused_needed(path)
    for rank in two_ranks.results(f"ddp-{path}"):
        assert_same(rank["params"], rank["reference"], "params")
        assert_same(rank["state"], rank["reference_state"], "state")


@needs_fsdp2
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shards", ["even", "uneven"])
def test_fsdp2(two_ranks, shards, path):
    fused_needed(path)
    ranks = two_ranks.results(f"fsdp2-{shards}-{path}")
    for rank in ranks:
        assert_same(rank["params"], rank["reference"], "params")
        assert_same(rank["state"], rank["reference_state"], "state")
        assert rank["state_types"] == ["DTensor", "Tensor"]  # the averages are sharded too
    if shards == "uneven":  # a Linear(3, 1): its bias is all on rank 0, rank 1's is empty
        assert [rank["local_shapes"][-1] for rank in ranks] == [(1,), (0,)]


@needs_fsdp2
def test_dcp_priming_leaves_a_sharded_optimizer_fresh(two_ranks):
    for rank in two_ranks.results("fsdp2-priming"):
        for entry in rank["primed"].values():
            assert entry["step"].item() == 0
            assert (entry["square_avg"] == 1).all()  # the tensorflow flavor's v0
            assert not entry["momentum_buffer"].any() and not entry["grad_avg"].any()
        assert_same(rank["params"], rank["reference"], "params")
        assert_same(rank["state"], rank["reference_state"], "state")


@pytest.mark.parametrize("path", ["fused", "foreach"])
def test_zero_redundancy_optimizer_consolidates_and_reloads(two_ranks, path):
    fused_needed(path)
    ranks = two_ranks.results(f"zero-{path}")
    first = ranks[0]
    consolidated, expected = first["consolidated"], first["reference_state_dict"]
    assert consolidated["state"].keys() == expected["state"].keys()
    assert_same(consolidated["state"], expected["state"], "consolidated state")
    for rank in ranks:
        assert_same(rank["params"], rank["reference"], "params")
        assert_same(rank["resumed"], rank["continued"], "resumed")
        assert_same(rank["continued"], rank["reference_continued"], "continued")


# ---- DCP: saved on 2 ranks, loaded on 1 and 4 --------------------------------------------


@needs_fsdp2
@pytest.mark.parametrize("flavor", CHECKPOINTED)
@pytest.mark.parametrize("world", ["one_rank", "four_ranks"])
def test_dcp_checkpoint_reshards_and_training_continues_identically(
    two_ranks, world, flavor, request
):
    loaded_world = request.getfixturevalue(world)
    [saved, _] = two_ranks.results(f"dcp-save-{flavor}")
    for rank in loaded_world.results(f"dcp-load-{flavor}"):
        assert_same(rank["loaded"], saved["saved"], "loaded")
        assert_same(rank["params"], saved["params"], "params")
        assert_same(rank["state"], saved["state"], "state")


@needs_fsdp2
@pytest.mark.parametrize(
    ("loaded", "saved"),
    [("dcp-load-torch-into-ours", "torch"), ("dcp-load-ours-into-torch", "ours-for-torch")],
    ids=["torch-to-ours", "ours-to-torch"],
)
def test_dcp_checkpoint_migrates_and_continues_as_the_first_would(
    two_ranks, one_rank, loaded, saved
):
    # Saved sharded over 2 ranks by one class, loaded on 1 rank by the other, with DCP's
    # default planner (every key the loading optimizer has must be in the checkpoint).
    [first, _] = two_ranks.results(f"dcp-save-{saved}")
    [rank] = one_rank.results(loaded)
    assert_same(rank["loaded"], first["saved"], "loaded")
    assert_same(rank["params"], first["params"], "params")
    assert_same(rank["state"], first["state"], "state")


# ---- the launcher: a failure, a hang and a crash at exit are judged right --------------------


def test_a_failing_rank_fails_its_scenario_and_ends_the_world_at_once(tmp_path):
    world = run_world(2, ["launcher-fail-on-the-last-rank", "launcher-barrier"], tmp_path)
    with pytest.raises(
        AssertionError, match=r"(?s)failed on rank 1 of 2:.*RuntimeError: as planned"
    ):
        world.results("launcher-fail-on-the-last-rank")
    # Rank 0 waited for rank 1 there: gloo saw the peer go (an error), or the launcher ended it.
    with pytest.raises(AssertionError, match=r"rank 0 of 2"):
        world.results("launcher-barrier")
    assert "rank 1: stopped in launcher-fail-on-the-last-rank" in world.failure


def test_a_hang_fails_at_the_timeout(tmp_path):
    world = run_world(1, ["launcher-hang"], tmp_path, timeout=5)
    with pytest.raises(AssertionError, match=r"ran past 5 s \(a hang\?\)"):
        world.results("launcher-hang")
    assert "rank 0: stopped in " in world.failure  # (in launcher-hang, unless start-up was slow)


def test_a_crash_at_exit_after_every_report_passes_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"after reporting every scenario \(gloo's teardown"):
        world = run_world(1, ["launcher-crash-at-exit"], tmp_path)
    assert world.results("launcher-crash-at-exit") == [0]
    assert world.exit_codes != [0] and world.failure == ""

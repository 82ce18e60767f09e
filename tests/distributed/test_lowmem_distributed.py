"""8-bit optimizer state under FSDP2 and DCP, on CPU processes (gloo).

Two worlds per run (worlds.py starts them, each under a hard timeout, so a hang fails;
lowmem_scenarios.py is what their ranks run): 2 ranks train, save and refuse bad
checkpoints; then 1 rank loads what they saved. An FSDP2 parameter's 8-bit state is
quantized shard by shard (each element with its index in its local shard), so the
oracle is one process stepping each shard as a parameter of its own, bitwise.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

import lowmem_scenarios  # noqa: E402
import scenarios  # noqa: E402
from worlds import run_world  # noqa: E402

from rmsprop import quantization as q  # noqa: E402
from rmsprop.torch import _lowmem  # noqa: E402
from rmsprop.torch._fused import why_not_on  # noqa: E402

NO_FSDP2 = scenarios.why_no_fsdp2()
if NO_FSDP2:
    pytest.skip(NO_FSDP2, allow_module_level=True)
NO_FUSED = why_not_on("cpu")
TRAINED = [
    name
    for name in lowmem_scenarios.SCENARIOS
    if name.startswith("lowmem-fsdp2-") and not (NO_FUSED and name.endswith("-fused"))
]
BIG = "0.weight"  # 103 rows of 100: shards of 52 and 51 rows, 21 and 20 blocks
EMPTY = "3.weight"  # (1, 4800): all on rank 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("lowmem-distributed")


@pytest.fixture(scope="module")
def two_ranks(shared):
    names = [*TRAINED, "lowmem-dcp-save", "lowmem-dcp-load", "lowmem-optim-state-dict"]
    return run_world(2, [*names, "lowmem-refusals"], shared)


@pytest.fixture(scope="module")
def one_rank(shared, two_ranks):  # (loads what two_ranks saved)
    return run_world(1, ["lowmem-load-on-another-world", "lowmem-reshard-through-float"], shared)


def assert_same(actual, expected, what=""):
    """Bitwise equal, through dicts of tensors."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), what
        for key in expected:
            assert_same(actual[key], expected[key], f"{what}.{key}")
    else:
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), what


# ---- training: bitwise one process stepping each shard -------------------------------------


@pytest.mark.parametrize("path", lowmem_scenarios.PATHS)
@pytest.mark.parametrize("flavor", lowmem_scenarios.FLAVORS)
def test_sharded_8bit_training_is_each_shard_quantized_on_its_own(two_ranks, flavor, path):
    if path == "fused" and NO_FUSED:
        pytest.skip(f"no fused CPU kernel here: {NO_FUSED}")
    ranks = two_ranks.results(f"lowmem-fsdp2-{flavor}-{path}")
    for rank, result in enumerate(ranks):
        assert_same(result["params"], result["reference"], "params")
        for name, expected in result["reference_state"].items():
            state = result["state"][name]
            for key, value in expected.items():
                if key.endswith("_scales"):  # the local row, padded to the largest shard's
                    row = state[key].view(-1)
                    assert_same(row[: value.numel()], value, f"{name}.{key}")
                    assert not row[value.numel() :].any(), f"{name}.{key}: padding"
                else:
                    assert_same(state[key].view(value.shape), value, f"{name}.{key}")
        # 8-bit buffers are DTensors, codes and scales; small parameters keep float32 ones.
        assert result["types"][BIG]["square_avg"] == "DTensor"
        assert result["types"][BIG]["square_avg_scales"] == "DTensor"
        assert result["state"][BIG]["square_avg"].dtype == torch.uint8
        assert result["state"]["0.bias"]["square_avg"].dtype == torch.float32
        assert result["scales_shapes"] == {BIG: (2, 21), "2.weight": (2, 17), EMPTY: (2, 19)}
        assert result["state"][BIG]["square_avg_scales"].shape == (1, 21)
        # An empty shard holds no codes, and a row of padding.
        codes = result["state"][EMPTY]["square_avg"]
        assert codes.numel() == (4800 if rank == 0 else 0)
        # The bytes this rank holds: its shards' codes, its padded scales, its float32 state.
        nbytes = sum(
            v.numel() * v.element_size()
            for entry in result["state"].values()
            for k, v in entry.items()
            if k != "step"
        )
        assert result["nbytes"] == nbytes
    # full_precision_state_dict(): DTensor float32 state, the decoded codes of each shard.
    for rank, result in enumerate(ranks):
        decoded = result["full_precision"]
        assert set(decoded[BIG]) == set(result["state"][BIG]) - {
            k for k in result["state"][BIG] if k.endswith("_scales")
        }
        big = decoded[BIG]["square_avg"]
        assert big.dtype == torch.float32 and big.shape == (103, 100)
        local = lowmem_scenarios.rows_of(big, 2)[rank]
        state = result["state"][BIG]
        codes, row = state["square_avg"], state["square_avg_scales"].view(-1)
        expected = _lowmem.dequantize(codes, row[: -(-codes.numel() // q.BLOCK)], "unsigned")
        assert_same(local, expected, "decoded")


# ---- DCP and the state-dict functions: bitwise on the same world -----------------------------


def test_dcp_round_trip_restores_codes_and_scales_and_training_continues_bitwise(two_ranks):
    saved_ranks = two_ranks.results("lowmem-dcp-save")
    for saved, loaded in zip(saved_ranks, two_ranks.results("lowmem-dcp-load")):
        assert_same(loaded["loaded"], saved["saved"], "loaded")
        assert_same(loaded["params"], saved["params"], "params")
        assert_same(loaded["state"], saved["state"], "state")
        assert loaded["state"][BIG]["momentum_buffer"].dtype == torch.uint8


def test_get_and_set_optimizer_state_dict_carry_8bit_state(two_ranks):
    for rank in two_ranks.results("lowmem-optim-state-dict"):
        assert_same(rank["other_params"], rank["params"], "params")
        assert_same(rank["other_state"], rank["state"], "state")


# ---- bad inputs: a clear error, and nothing changed -------------------------------------------


REFUSED = {
    # DCP's planner finds no scales in a float32 checkpoint (a BaseException).
    "float-checkpoint-by-dcp": r"CheckpointException.*Missing key in checkpoint.*_scales",
    "scales-of-another-shape": r"ValueError: .*scales must be float32 of shape \(2, \d+\)",
    "whole-8bit": r"ValueError: .*8-bit codes of a whole tensor",
    "whole-float": r"ValueError: .*is a whole tensor; its parameter is a DTensor",
}


@pytest.mark.parametrize("case", REFUSED)
def test_bad_checkpoints_are_refused_and_change_nothing(two_ranks, case):
    for rank in two_ranks.results("lowmem-refusals"):
        result = rank[case]
        assert re.search(REFUSED[case], result["error"], flags=re.DOTALL), result["error"][-2000:]
        assert result["unchanged"]


def test_an_8bit_checkpoint_of_another_world_size_is_refused(one_rank):
    # Saved on 2 ranks, its scales are (2, count); this world's are (1, count'): DCP refuses
    # the size before it reads anything.
    [result] = one_rank.results("lowmem-load-on-another-world")
    assert re.search(r"CheckpointException.*Size mismatch.*_scales", result["error"], re.DOTALL)
    assert result["unchanged"]


def test_resharding_goes_through_full_precision_state(two_ranks, one_rank):
    # Saved decoded on 2 ranks, loaded on 1: the float values are the 2-rank state decoded,
    # and the 8-bit state is their quantization, with this world's blocks and the seed of
    # the step they were saved at.
    saved = two_ranks.results("lowmem-dcp-save")[0]
    [result] = one_rank.results("lowmem-reshard-through-float")
    assert_same(result["params"], saved["saved"]["params"], "params")
    for name, entry in saved["decoded"].items():
        assert_same(result["twin"][name], entry, name)
        state = result["state"][name]
        for key in ("square_avg", "grad_avg", "momentum_buffer"):
            if state[key].dtype != torch.uint8:
                assert_same(state[key], entry[key], f"{name}.{key}")
                continue
            step = int(entry["step"])
            codes, scales = _lowmem.quantize_buffer(entry[key], key, step)
            assert_same(state[key], codes, f"{name}.{key}")
            assert_same(state[_lowmem.scales_key(key)], scales.view(1, -1), f"{name}.{key}")

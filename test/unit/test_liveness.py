"""runtime/liveness.py: steps whose outputs share an array (one per color) never
overwrite a value still needed. Random step lists run in a small model of the
executor: a fresh step writes its own token into its color's array, a step that may
return an operand gives its result that operand's array, a step put off runs just
before its first reader, and every read finds its value's token still there."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.runtime.liveness import StepUse, output_colors

INPUTS = 3


@st.composite
def programs(draw) -> tuple[list[StepUse], list[int]]:
    """Steps reading inputs (slots 0 to 2) and earlier results, of one of two kinds; a
    step that is not fresh may be one of its operands' arrays; any step may be put off
    to its reader (a convolution's put-off Relu is fresh); some results are returned."""
    steps: list[StepUse] = []
    for index in range(draw(st.integers(1, 24))):
        result = INPUTS + index
        reads = tuple(draw(st.lists(st.integers(0, result - 1), max_size=3, unique=True)))
        fresh = draw(st.booleans())
        aliases = () if fresh or not reads else tuple(draw(st.lists(st.sampled_from(reads), max_size=len(reads), unique=True)))
        put_off = draw(st.booleans())
        steps.append(StepUse(result, reads, aliases, put_off, fresh, draw(st.sampled_from("ab"))))
    returned = draw(st.lists(st.integers(INPUTS, INPUTS + len(steps) - 1), max_size=2, unique=True))
    return steps, returned


def _run(steps: list[StepUse], returned: list[int], colors: dict[int, int]) -> None:
    """Run `steps` with their outputs in their colors' arrays; fail where a read finds
    another value than the one its slot was given."""
    array_of: dict[int, object] = {slot: ("input", slot) for slot in range(INPUTS)}
    token_of: dict[int, object] = {slot: ("input", slot) for slot in range(INPUTS)}
    held: dict[object, object] = {("input", slot): ("input", slot) for slot in range(INPUTS)}
    done: set[int] = set()

    def run(index: int) -> None:
        step = steps[index]
        for slot in step.reads:
            producer = slot - INPUTS
            if producer >= 0 and producer not in done:
                run(producer)
        for slot in step.reads:
            assert held[array_of[slot]] == token_of[slot], f"step {index} reads slot {slot} overwritten"
        done.add(index)
        if step.fresh:
            array_of[step.result] = ("color", colors[index])
        elif step.aliases:
            array_of[step.result] = array_of[step.aliases[0]]
        else:
            array_of[step.result] = ("own", index)
        token_of[step.result] = held[array_of[step.result]] if step.aliases and not step.fresh else ("made", index)
        held[array_of[step.result]] = token_of[step.result]

    for index, step in enumerate(steps):
        if not step.put_off and index not in done:
            run(index)
    for slot in returned:
        if slot - INPUTS in done:
            assert held[array_of[slot]] == token_of[slot], f"returned slot {slot} overwritten"


@settings(max_examples=300, deadline=None)
@given(programs())
def test_no_value_is_overwritten_while_needed(program):
    steps, returned = program
    colors, reusing = output_colors(steps, returned)
    assert set(colors) == {index for index, step in enumerate(steps) if step.fresh}
    assert reusing <= set(colors)
    assert all(steps[index].kind == steps[other].kind for index, color in colors.items() for other in colors if colors[other] == color)
    _run(steps, returned, colors)


def test_a_chain_of_fresh_steps_takes_two_arrays():
    """Each step reads the one before: two colors in turn, each reused after its first."""
    steps = [StepUse(INPUTS + index, (INPUTS + index - 1,), (), False, True) for index in range(6)]
    colors, reusing = output_colors(steps, [INPUTS + 5])
    assert [colors[index] for index in range(6)] == [0, 1, 0, 1, 0, 1] and reusing == {2, 3, 4, 5}


def test_outputs_of_two_kinds_take_colors_of_their_own():
    """A chain of kinds a, b, b, a: step 2 may not take step 0's color, free but of
    the other kind (as one kind for all it would), and step 3 takes it again; so each
    color holds arrays of one shape."""
    chain = [StepUse(INPUTS + index, (INPUTS + index - 1,), (), False, True, kind) for index, kind in enumerate("abba")]
    colors, _ = output_colors(chain, [INPUTS + 3])
    assert [colors[index] for index in range(4)] == [0, 1, 2, 0]
    alike = [StepUse(step.result, step.reads, (), False, True) for step in chain]
    assert list(output_colors(alike, [INPUTS + 3])[0].values()) == [0, 1, 0, 1]


def test_a_view_keeps_its_source_needed():
    """Step 1 is a view of step 0's output (not fresh, aliasing it), read by step 3:
    step 2 may not take step 0's array, step 4 may."""
    steps = [
        StepUse(INPUTS, (0,), (), False, True),
        StepUse(INPUTS + 1, (INPUTS,), (INPUTS,), False, False),
        StepUse(INPUTS + 2, (1,), (), False, True),
        StepUse(INPUTS + 3, (INPUTS + 1, INPUTS + 2), (), False, True),
        StepUse(INPUTS + 4, (INPUTS + 3,), (), False, True),
    ]
    colors, _ = output_colors(steps, [INPUTS + 4])
    assert colors[2] != colors[0] and colors[3] not in (colors[0], colors[2]) and colors[4] in (colors[0], colors[2])


def test_a_step_put_off_reads_where_its_reader_runs():
    """Step 1 reads step 0's output but runs where step 3, its reader, does: step 2 may
    not take step 0's array."""
    steps = [
        StepUse(INPUTS, (0,), (), False, True),
        StepUse(INPUTS + 1, (INPUTS,), (), True, False),
        StepUse(INPUTS + 2, (1,), (), False, True),
        StepUse(INPUTS + 3, (INPUTS + 1, INPUTS + 2), (), False, True),
    ]
    colors, _ = output_colors(steps, [INPUTS + 3])
    assert colors[2] != colors[0]

"""Property-based: any matchers, written out in PromQL syntax, parse back to themselves."""

from hypothesis import example, given
from hypothesis import strategies as st

from podflame.server.selector import Op, SelectorError, parse_selector

Triple = tuple[str, Op, str]

label_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
# Any Unicode text but surrogates (which no UTF-8 request can carry); quotes,
# backslashes, line breaks and escapes-looking text are in on purpose.
pieces = st.characters(exclude_categories=("Cs",)) | st.sampled_from(
    ['"', "'", "`", "\\", "\n", "\\n", "\\x41", "{}=~,"]
)
values = st.lists(pieces, max_size=12).map("".join)
matchers = st.lists(st.tuples(label_names, st.sampled_from(list(Op)), values), max_size=6)
spaces = st.sampled_from(["", " ", "  ", "\n", "\t "])


def quote_double(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def quote_single(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def quote_escaped(value: str) -> str:
    """Every character as a \\U escape, as a client escaping everything would."""
    return '"' + "".join(f"\\U{ord(char):08x}" for char in value) + '"'


def quote_raw(value: str) -> str:
    # Backquoted strings have no escapes; the value must not hold a backquote.
    return f"`{value}`" if "`" not in value else quote_double(value)


quoters = st.sampled_from([quote_double, quote_single, quote_escaped, quote_raw])


@st.composite
def selectors(draw: st.DrawFn) -> tuple[str, list[Triple]]:
    chosen = draw(matchers)
    parts = []
    for name, op, value in chosen:
        quote = draw(quoters)
        parts.append(f"{draw(spaces)}{name}{draw(spaces)}{op.value}{draw(spaces)}{quote(value)}")
    trailing = "," if chosen and draw(st.booleans()) else ""
    return f"{draw(spaces)}{{{','.join(parts)}{trailing}{draw(spaces)}}}", chosen


@given(selectors())
@example(('{a="\\\\\\"\\n"}', [("a", Op.EQ, '\\"\n')]))
@example(("{pod=~`é.*\\d`}", [("pod", Op.RE, "é.*\\d")]))
def test_round_trip(selector: tuple[str, list[Triple]]) -> None:
    text, expected = selector
    assert [(m.name, m.op, m.value) for m in parse_selector(text)] == expected


@given(st.text())
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        parse_selector(text)
    except SelectorError as error:
        assert 0 <= error.position <= len(text)


@given(selectors(), st.integers(0, 200), st.text(max_size=3))
def test_damaged_selectors_raise_only_selector_error(
    selector: tuple[str, list[Triple]], at: int, insert: str
) -> None:
    text = selector[0]
    at %= len(text) + 1
    for damaged in (text[:at], text[:at] + insert + text[at:], text[:at] + text[at + 1 :]):
        try:
            parse_selector(damaged)
        except SelectorError as error:
            assert 0 <= error.position <= len(damaged)

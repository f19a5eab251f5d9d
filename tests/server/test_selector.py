import pytest

from podflame.server.selector import Matcher, Op, SelectorError, parse_selector


@pytest.mark.parametrize("text", ["", "   ", "{}", " { } ", "{\n}"])
def test_empty_selects_everything(text: str) -> None:
    assert parse_selector(text) == ()


def test_all_operators_anded_in_order() -> None:
    matchers = parse_selector('{a="1", b!="2", c=~"3.*", d!~"4|5"}')
    assert [(m.name, m.op, m.value) for m in matchers] == [
        ("a", Op.EQ, "1"),
        ("b", Op.NE, "2"),
        ("c", Op.RE, "3.*"),
        ("d", Op.NRE, "4|5"),
    ]


def test_spacing_and_trailing_comma() -> None:
    matchers = parse_selector(' {  pod = "x" ,\n\t_ns_2 !~ "y" , } ')
    assert [(m.name, m.op, m.value) for m in matchers] == [
        ("pod", Op.EQ, "x"),
        ("_ns_2", Op.NRE, "y"),
    ]


def test_value_position_points_at_the_string() -> None:
    (matcher,) = parse_selector('{comm=~"ab("}')
    assert matcher.position == 7


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"back\\slash"', "back\\slash"),
        (r'"line\nbreak\ttab"', "line\nbreak\ttab"),
        (r'"\x41\u00e9\U0001F525\101"', "Aé🔥A"),
        (r"'single \' quote'", "single ' quote"),
        (r"`raw \n stays`", r"raw \n stays"),
        ('"{}=,~!"', "{}=,~!"),
    ],
)
def test_string_escapes_as_in_promql(literal: str, value: str) -> None:
    assert parse_selector(f"{{k={literal}}}")[0].value == value


def test_regex_is_anchored() -> None:
    assert Matcher("comm", Op.RE, "bur|x").anchored_regex == "^(?:bur|x)$"


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ('pod="x"', 0, "expected '{'"),
        ('{pod="x"', 8, "expected '}'"),
        ('{pod="x" comm="y"}', 9, "expected '}'"),
        ('{1pod="x"}', 1, "expected a label name"),
        ("{pod}", 4, "expected one of"),
        ('{pod=="x"}', 5, "expected a quoted string"),
        ("{pod=x}", 5, "expected a quoted string"),
        ("{pid=}", 5, "expected a quoted string"),
        ('{pod="x}', 5, "unterminated string"),
        ('{pod="a\nb"}', 5, "unterminated string"),
        (r'{pod="a\qb"}', 7, "unknown escape"),
        (r'{pod="\x4"}', 6, "invalid escape"),
        (r'{pod="\777"}', 6, "invalid escape"),
        (r'{pod="\ud800"}', 6, "invalid escape"),
        ('{pod="x"} extra', 10, "unexpected text"),
        ("{,}", 1, "expected a label name"),
    ],
)
def test_errors_carry_a_position(text: str, position: int, message: str) -> None:
    with pytest.raises(SelectorError) as raised:
        parse_selector(text)
    assert raised.value.position == position
    assert message in raised.value.message

"""Campaign content: sandboxed Jinja2 parts, layouts, seed placeholders, validation at save,
bounded rendering, CSS inlining and the derived plain-text part."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.campaigns.templating import (
    MAX_SUBJECT_CHARS,
    RenderContext,
    RenderedMessage,
    TemplateProblem,
    TemplateSource,
    check_template,
    compile_content,
    html_to_text,
    sample_context,
    translate_placeholders,
)
from tidings.errors import RuleViolation

NO_LAYOUTS: dict[str, str] = {}

BASE_LAYOUT = """<!DOCTYPE html>
<html><head><style>
p { color: #333333; }
a.button { background: #1a73e8; }
@media (max-width: 600px) { p { font-size: 18px; } }
</style></head>
<body>
{% block body %}{% endblock %}
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>"""


def subscriber(**changes: object) -> RenderContext:
    return dataclasses.replace(sample_context(), **changes)  # type: ignore[arg-type]


def render(
    html: str,
    subject: str = "Hello",
    text: str | None = None,
    context: RenderContext | None = None,
    layouts: dict[str, str] = NO_LAYOUTS,
) -> RenderedMessage:
    compiled = compile_content(TemplateSource(subject, html, text), layouts.get)
    return compiled.render(context or sample_context())


def problem(
    html: str, subject: str = "Hello", text: str | None = None, layouts: dict[str, str] = NO_LAYOUTS
) -> str:
    with pytest.raises(TemplateProblem) as caught:
        check_template(TemplateSource(subject, html, text), layouts.get)
    return str(caught.value)


# --- variables and escaping ---------------------------------------------------------------------


def test_every_documented_variable_renders() -> None:
    html = (
        "<p>{{ subscriber.name }}|{{ subscriber.first_name }}|{{ subscriber.email }}</p>"
        "<p>{{ subscriber.attributes.plan }}|{{ subscriber.tags|join(',') }}</p>"
        "<p>{{ campaign.name }}|{{ campaign.subject }}</p>"
        "<p>{{ unsubscribe_url }}|{{ preferences_url }}|{{ view_in_browser_url }}</p>"
    )
    message = render(html, subject="{{ campaign.subject }} for {{ subscriber.first_name }}")

    assert message.subject == "Sample subject for Ada"
    assert message.html == (
        "<p>Ada Lovelace|Ada|ada@example.com</p><p>pro|tech</p>"
        "<p>Sample campaign|Sample subject</p>"
        "<p>https://example.com/unsubscribe/sample|https://example.com/preferences/sample"
        "|https://example.com/view/sample</p>"
    )


def test_html_escapes_a_subscriber_name_but_subject_and_text_do_not() -> None:
    evil = subscriber(subscriber_name="<script>alert(1)</script>")
    message = render(
        "<p>Hi {{ subscriber.name }}</p>",
        subject="Hi {{ subscriber.name }}",
        text="Hi {{ subscriber.name }}",
        context=evil,
    )

    assert message.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert message.subject == "Hi <script>alert(1)</script>"
    assert message.text == "Hi <script>alert(1)</script>"


def test_a_missing_attribute_renders_empty_instead_of_failing_the_send() -> None:
    html = "<p>[{{ subscriber.attributes.plan }}][{{ subscriber.attributes.plan.tier }}]</p>"
    message = render(html, context=subscriber(subscriber_attributes={}))

    assert message.html == "<p>[][]</p>"


# --- the seeds' single-brace placeholders -------------------------------------------------------


def test_seed_001_content_with_name_placeholder_renders() -> None:
    message = render("<h1>Hello, {name}!</h1><p>Here's your weekly update.</p>")

    assert message.html == "<h1>Hello, Ada Lovelace!</h1><p>Here's your weekly update.</p>"
    assert message.text == "Hello, Ada Lovelace!\n\nHere's your weekly update."


def test_seed_003_plain_message_renders_unchanged() -> None:
    message = render("Stay updated with the latest in tech!", subject="Weekly Tech News")

    assert message.html == "Stay updated with the latest in tech!"
    assert message.text == "Stay updated with the latest in tech!"


def test_placeholders_work_in_every_part_and_are_escaped_in_html() -> None:
    message = render(
        "<p>{name} ({email})</p>",
        subject="For {name}",
        text="Dear {first_name}, ({email})",
        context=subscriber(subscriber_name="Bo & Co", subscriber_email="bo@example.com"),
    )

    assert message.subject == "For Bo & Co"
    assert message.html == "<p>Bo &amp; Co (bo@example.com)</p>"
    assert message.text == "Dear Bo, (bo@example.com)"


@pytest.mark.parametrize(
    "source",
    [
        "<style>p {color: red} .name {name: x}</style>",
        '<script type="application/ld+json">{"name": "Ada", "email": "x"}</script>',
        "{{ name }} {{name}} {%- if name %}{% endif %}",
        "{{ '{name}' }} {# {name} #}",
        "{% raw %}{name}{% endraw %}",
        "{Name} { name } {nickname} {name:}",
    ],
)
def test_only_exact_single_brace_placeholders_are_translated(source: str) -> None:
    assert translate_placeholders(source) == source


def test_translated_placeholders_become_subscriber_variables() -> None:
    translated = translate_placeholders("p {color: red} {name}, {first_name}: {email}")

    assert translated == (
        "p {color: red} {{ subscriber.name }}, {{ subscriber.first_name }}: {{ subscriber.email }}"
    )


@given(st.text(alphabet="{}%#name \n-raw", max_size=60))
def test_placeholder_translation_never_moves_lines(source: str) -> None:
    # Error messages cite the author's line numbers, so the translation must keep them.
    assert translate_placeholders(source).count("\n") == source.count("\n")


# --- layouts ------------------------------------------------------------------------------------


def test_a_template_extends_a_stored_layout() -> None:
    child = '{% extends "base" %}{% block body %}<p>Hi {name}</p>{% endblock %}'
    message = render(child, layouts={"base": BASE_LAYOUT})

    assert '<p style="color: #333333;">Hi Ada Lovelace</p>' in message.html
    assert 'href="https://example.com/unsubscribe/sample"' in message.html


def test_layouts_extend_layouts() -> None:
    layouts = {
        "base": BASE_LAYOUT,
        "branded": '{% extends "base" %}{% block body %}<h1>Acme</h1>{% block main %}'
        "{% endblock %}{% endblock %}",
    }
    child = '{% extends "branded" %}{% block main %}<p>News</p>{% endblock %}'

    message = render(child, layouts=layouts)

    assert message.text == "Acme\n\nNews\n\nUnsubscribe (https://example.com/unsubscribe/sample)"


def test_layouts_are_loaded_at_compile_time_and_never_while_rendering() -> None:
    loaded: list[str] = []

    def load_layout(name: str) -> str | None:
        loaded.append(name)
        return BASE_LAYOUT if name == "base" else None

    source = TemplateSource("Hi", '{% extends "base" %}{% block body %}{name}{% endblock %}')
    compiled = compile_content(source, load_layout)
    for _ in range(3):
        compiled.render(sample_context())

    assert loaded == ["base"]


def test_a_missing_layout_is_an_error_naming_it() -> None:
    message = problem('<p>x</p>\n{% extends "newsletter" %}')

    assert message == "html, line 2: no layout named 'newsletter'"


def test_a_missing_layout_of_a_layout_names_the_layout_that_wants_it() -> None:
    layouts = {"branded": '\n{% extends "base" %}'}

    message = problem('{% extends "branded" %}', layouts=layouts)

    assert message == "html (layout 'branded'), line 2: no layout named 'base'"


def test_layouts_that_extend_each_other_are_refused() -> None:
    layouts = {"a": '{% extends "b" %}', "b": '{% extends "a" %}'}

    assert problem('{% extends "a" %}', layouts=layouts) == (
        "html: layouts extend each other in a cycle: a -> b -> a"
    )


def test_only_the_html_part_can_use_a_layout() -> None:
    message = problem("<p>x</p>", text='{% extends "base" %}', layouts={"base": BASE_LAYOUT})

    assert message == "text, line 1: only the HTML part can use a layout, not 'base'"


# --- validation at save -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            TemplateSource("Hi", "<p>\n\n{{ subscriber.name|shout }}</p>"),
            "html, line 3: no filter named 'shout'",
        ),
        (
            TemplateSource("Hi", "<p>\n{% if false %}{{ x|shout }}{% endif %}</p>"),
            "html, line 2: no filter named 'shout'",
        ),
        (
            TemplateSource("Hi", "<p>\n{% if subscriber is loud %}!{% endif %}</p>"),
            "html, line 2: no test named 'loud'",
        ),
        (TemplateSource("Hi {{ name", "<p>x</p>"), "subject, line 1: unexpected end of template"),
        (
            TemplateSource("Hi", "<p>x</p>", text="Hello\n{% for x in y %}"),
            "text, line 2: unexpected end of template",
        ),
        (
            TemplateSource("Hi", "<p>\n{% frobnicate %}</p>"),
            "html, line 2: encountered unknown tag 'frobnicate'",
        ),
    ],
)
def test_check_template_names_the_part_and_line_of_a_problem(
    source: TemplateSource, expected: str
) -> None:
    with pytest.raises(TemplateProblem) as caught:
        check_template(source, NO_LAYOUTS.get)

    assert str(caught.value).startswith(expected)


def test_check_template_returns_the_preview_for_the_sample_subscriber() -> None:
    preview = check_template(TemplateSource("Hi {first_name}", "<p>{name}</p>"), NO_LAYOUTS.get)

    assert preview == RenderedMessage("Hi Ada", "<p>Ada Lovelace</p>", "Ada Lovelace")


def test_check_template_refuses_what_would_fail_for_a_subscriber_without_attributes() -> None:
    html = "<p>\n{% if subscriber.attributes.plan > 'a' %}paid{% endif %}</p>"

    message = problem(html)

    assert message.startswith("html, line 2: 'dict object' has no attribute 'plan'")
    assert "default" in message
    assert message.endswith("(for a subscriber without name, attributes or tags)")


def test_a_template_problem_is_a_value_error_and_a_rule_violation() -> None:
    assert issubclass(TemplateProblem, ValueError)
    assert issubclass(TemplateProblem, RuleViolation)


# --- the sandbox --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__call__.__globals__ }}",
        "{{ namespace.__init__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ '{0.__class__.__base__}'.format(1) }}",
        "{{ subscriber.tags.append('vip') }}",
        "{{ subscriber.attributes.update({'plan': 'free'}) }}",
        "{{ subscriber.attributes.clear() }}",
    ],
)
def test_sandbox_escapes_are_refused_with_their_line(escape: str) -> None:
    message = problem(f"<p>\n\n{escape}</p>")

    assert re.match(r"html, line 3: access to attribute '\w+' of '\w+' object is unsafe", message)


def test_a_sandbox_escape_in_a_layout_names_the_layout_and_its_line() -> None:
    layouts = {"evil": "<html>\n<body>\n{{ cycler.__init__ }}{% block body %}{% endblock %}"}

    message = problem('{% extends "evil" %}{% block body %}x{% endblock %}', layouts=layouts)

    assert message.startswith("html (layout 'evil'), line 3: ")


def test_a_violation_at_send_time_is_a_template_problem_with_part_and_line() -> None:
    compiled = compile_content(
        TemplateSource("Hi", "<p>\n{{ subscriber.name.__class__ }}</p>"), {}.get
    )

    with pytest.raises(TemplateProblem) as caught:
        compiled.render(sample_context())

    assert (caught.value.part, caught.value.line, caught.value.layout) == ("html", 2, None)


def test_the_sandbox_keeps_the_subscribers_data_unchanged() -> None:
    context = subscriber(subscriber_tags=["tech"], subscriber_attributes={"plan": "pro"})

    with pytest.raises(TemplateProblem):
        render("{{ subscriber.tags.append('vip') }}", context=context)

    assert context.subscriber_tags == ["tech"]


# --- runaway templates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
        ("{{ 'x' * 10**9 }}", "a value longer than 1,000,000 characters or items"),
        ("{{ 10 ** 100000 }}", "an integer larger than 4,096 bits"),
        (
            "{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
            "more than 100,000 loop iterations and calls",
        ),
        (
            "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
            "{{ m(40) }}",
            "more than 100,000 loop iterations and calls",
        ),
        (
            "{% for i in range(50000) %}{{ 'x' * 100 }}{% endfor %}",
            "output larger than 2,000,000 characters",
        ),
        (
            "{% macro m() %}{% for i in range(90000) %}<p>static text here</p>{% endfor %}"
            "{% endmacro %}{% set hidden = m() %}",
            "output larger than 2,000,000 characters",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}",
            "a value longer than 1,000,000 characters or items",
        ),
        ("{{ 'x'|center(10**9) }}", "the center filter with a size over 10,000"),
        ("{{ [0]|batch(10**9, 0)|list }}", "the batch filter with a size over 10,000"),
        ("{{ '{:>999999999}'.format(1) }}", "a format width over 10,000"),
        ("{{ '%999999999s' % 1 }}", "a format width over 10,000"),
        ("{{ 'x'.ljust(10**9) }}", "access to attribute 'ljust' of 'str' object is unsafe"),
        ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    ],
)
def test_runaway_templates_are_refused_with_their_line(html: str, expected: str) -> None:
    message = problem(f"<p>\n{html}</p>")

    assert message.startswith("html, line 2: ")
    assert expected in message


def test_bounded_rendering_leaves_ordinary_loops_and_arithmetic_alone() -> None:
    html = (
        "{% for i in range(3) %}{{ i * 2 }}{{ '-' * 2 }}{% endfor %}"
        "{{ 2 ** 10 }} {{ [1] + [2] }} {{ '%05.1f'|format(3.14159) }} {{ '{:>4}'.format(7) }}"
        "{% for tag in subscriber.tags recursive %}{{ loop.index }}:{{ tag }}{% endfor %}"
    )

    assert render(html).html == "0--2--4--1024 [1, 2] 003.1    71:tech"


# --- subject ------------------------------------------------------------------------------------


def test_the_subject_is_stripped_and_joined_onto_one_line() -> None:
    message = render("x", subject="  Weekly\r\nnews for\n\n{{ subscriber.name }}  ")

    assert message.subject == "Weekly news for Ada Lovelace"


@given(st.text(max_size=40))
def test_the_subject_never_contains_a_line_break(name: str) -> None:
    message = render("x", subject="Hi {name}\n!", context=subscriber(subscriber_name=name))

    assert "\r" not in message.subject
    assert "\n" not in message.subject
    assert len(message.subject.splitlines()) <= 1


def test_a_subject_over_the_limit_is_refused_at_save_and_cut_at_send() -> None:
    subject = "x" * 990 + " {{ subscriber.name }}"

    assert (
        problem("<p>x</p>", subject=subject) == "subject: the subject is 1,003 characters, over 998"
    )
    long_name = subscriber(subscriber_name="y" * 2000)
    assert len(render("x", subject=subject, context=long_name).subject) == MAX_SUBJECT_CHARS


# --- CSS inlining -------------------------------------------------------------------------------


def test_style_rules_are_inlined_into_the_sent_html() -> None:
    html = (
        "<html><head><style>td.cell { padding: 8px; } p { color: red; }</style></head><body>"
        "<table>{% for tag in subscriber.tags %}<tr><td class='cell'>{{ tag }}</td></tr>"
        "{% endfor %}</table><p>{name}</p></body></html>"
    )

    sent = render(html).html

    assert '<td class="cell" style="padding: 8px;">tech</td>' in sent
    assert '<p style="color: red;">Ada Lovelace</p>' in sent


def test_media_queries_stay_in_a_style_block() -> None:
    child = '{% extends "base" %}{% block body %}<p>Hi</p>{% endblock %}'

    sent = render(child, layouts={"base": BASE_LAYOUT}).html

    assert re.search(r"<style>\s*@media \(max-width: 600px\)", sent)
    assert "p { color: #333333; }" not in sent  # inlined, so dropped from the block


def test_html_without_a_style_block_is_sent_as_written() -> None:
    assert render("<p>{name}</p>").html == "<p>Ada Lovelace</p>"


# --- the plain-text part ------------------------------------------------------------------------

NEWSLETTER = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8"><title>Widget Weekly</title>
  <style>p { margin: 0 }</style>
  <script>track();</script>
</head>
<body>
  <div style="display:none">&zwnj;&nbsp;&zwnj;</div>
  <table role="presentation"><tr><td>
    <a href="https://example.com"><img src="logo.png" alt="Widget Weekly"></a>
  </td></tr>
  <tr><td>
    <h1>Hello,   Ada &amp; friends!</h1>
    <p>This week:
       three   stories,<br>one launch.</p>
    <ul>
      <li><a href="https://example.com/stories/1">Widgets &lt;3 gadgets</a></li>
      <li><a href="https://example.com/stories/2">https://example.com/stories/2</a></li>
    </ul>
    <h2>Questions?</h2>
    <p>Write to <a href="mailto:help@example.com?subject=Hi">help@example.com</a>
       or <a href="mailto:help@example.com">our team</a>.
       <a href="#top">Back to top</a></p>
    <p><img src="pixel.gif" alt=""></p>
  </td></tr></table>
  <p><a href="https://example.com/unsubscribe/42">Unsubscribe</a> &middot; 2026</p>
</body>
</html>"""


def test_plain_text_is_derived_from_a_realistic_newsletter() -> None:
    assert html_to_text(NEWSLETTER) == (
        "Widget Weekly (https://example.com)\n"
        "\n"
        "Hello, Ada & friends!\n"
        "\n"
        "This week: three stories,\n"
        "one launch.\n"
        "\n"
        "- Widgets <3 gadgets (https://example.com/stories/1)\n"
        "- https://example.com/stories/2\n"
        "\n"
        "Questions?\n"
        "\n"
        "Write to help@example.com or our team (help@example.com). Back to top\n"
        "\n"
        "Unsubscribe (https://example.com/unsubscribe/42) · 2026"
    )


def test_the_text_part_is_derived_when_no_text_template_is_given() -> None:
    message = render('<p>Read <a href="{{ view_in_browser_url }}">online</a></p>')

    assert message.text == "Read online (https://example.com/view/sample)"


def test_a_text_template_is_used_as_written() -> None:
    message = render(
        "<p>ignored</p>",
        text="Hi {first_name},\n\n{% for t in subscriber.tags %}- {{ t }}\n{% endfor %}",
    )

    assert message.text == "Hi Ada,\n\n- tech\n"


# --- compile once, render many ------------------------------------------------------------------


def test_compiling_once_renders_the_same_as_compiling_for_each_recipient() -> None:
    layouts = {"base": BASE_LAYOUT}
    source = TemplateSource(
        subject="News for {first_name}",
        html='{% extends "base" %}{% block body %}<p>{name}: {{ subscriber.attributes.plan }}'
        "</p>{% endblock %}",
    )
    recipients = [
        subscriber(subscriber_name=name, subscriber_attributes=attributes)
        for name, attributes in [("Ada Lovelace", {"plan": "pro"}), ("Bo", {}), ("", {"x": 1})]
    ]

    compiled = compile_content(source, layouts.get)
    once = [compiled.render(recipient) for recipient in recipients]
    each = [compile_content(source, layouts.get).render(r) for r in recipients]

    assert once == each
    assert [message.subject for message in once] == ["News for Ada", "News for Bo", "News for"]

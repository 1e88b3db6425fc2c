"""The Jinja sandbox campaign templates run in: no access to Python internals, and a bounded amount
of work per render, so that one template cannot hang or exhaust a delivery worker.

Jinja's own sandbox blocks attribute escapes and caps ``range()``. It does not bound what a template
computes, so this module adds, per render of one part (subject, HTML or text):

* a step budget: every loop iteration and every call (functions, methods, macros, recursive
  ``loop()``) spends one step, so nested loops and recursive macros stop at ``MAX_STEPS``;
* an output budget: every ``{{ ... }}`` and every piece of literal text spends its length, including
  output captured by macros, ``{% set %}`` blocks and ``{% filter %}`` blocks, so a render can never
  produce more than ``MAX_OUTPUT_CHARS`` characters;
* size checks on values: ``*``, ``**`` and ``+`` are checked before they compute
  (``'x' * 10**9``, ``10 ** 100000``), and the results of ``~``, calls and filters after, so that
  repeated doubling stops at ``MAX_VALUE_LEN``; padding widths (the ``center``, ``indent``,
  ``batch`` and ``slice`` filters, format strings) are capped at ``MAX_WIDTH``, and
  ``str.ljust``-style padding methods are not callable.

A single call can still multiply two bounded inputs (``big|replace('a', other_big)``); the last line
of defence against that is the worker's memory limit, not this module.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_STEPS = 100_000
MAX_OUTPUT_CHARS = 2_000_000
MAX_VALUE_LEN = 1_000_000
MAX_INT_BITS = 4_096
MAX_WIDTH = 10_000

# Filters whose later arguments size their output (a width, a number of rows or columns).
_WIDTH_FILTERS = frozenset({"center", "indent", "batch", "slice"})
# str methods that pad to a caller-given width; the bounded ``center`` filter covers their use.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# A printf conversion's optional mapping key, flags, width and precision.
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")

# Names of the filters the AST rewrite inserts; a template may use them too, to no effect.
_COUNT_ITEMS = "_tidings_count_items"
_COUNT_OUTPUT = "_tidings_count_output"
_CHECK_SIZE = "_tidings_check_size"


class LimitExceeded(SecurityError):
    """A template tried to do more work, or build a bigger value, than one message may need."""


@dataclass
class _Budget:
    steps: int = MAX_STEPS
    chars: int = MAX_OUTPUT_CHARS

    def spend_step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise LimitExceeded(f"more than {MAX_STEPS:,} loop iterations and calls in one render")

    def spend_chars(self, count: int) -> None:
        self.chars -= count
        if self.chars < 0:
            raise LimitExceeded(f"output larger than {MAX_OUTPUT_CHARS:,} characters")


# A context variable rather than template state: one budget per render, and safe when workers
# render in threads or in concurrent tasks.
_budget: ContextVar[_Budget] = ContextVar("tidings_template_budget")


def render_bounded(template: Template, variables: Mapping[str, Any]) -> str:
    """Render ``template`` with a fresh work budget; raises ``LimitExceeded`` past a limit."""
    token = _budget.set(_Budget())
    try:
        return template.render(variables)
    finally:
        _budget.reset(token)


def bound_template_tree(tree: nodes.Template) -> nodes.Template:
    """Rewrite a parsed template so that loops, output and ``~`` report to the budget."""
    result = _BudgetRewriter().visit(tree)
    assert isinstance(result, nodes.Template)
    return result


def _apply(name: str, node: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _BudgetRewriter(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _apply(_COUNT_ITEMS, node.iter)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        node.nodes = [_apply(_COUNT_OUTPUT, child) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return _apply(_CHECK_SIZE, node)


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget.get()
    for item in iterable:
        budget.spend_step()
        yield item


# pass_context keeps Jinja from running these two at compile time (constant folding): they must
# run at every render, against that render's budget.
@pass_context
def _count_items(_context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    return _counted(iterable)


@pass_context
def _count_output(_context: Context, value: Any) -> Any:
    _budget.get().spend_chars(len(value) if isinstance(value, str) else len(str(value)))
    return value


def _check_size(value: Any) -> Any:
    """Refuse a value too big to be part of one message; return it unchanged otherwise."""
    if isinstance(value, int):
        _check_bits(value.bit_length())
    elif isinstance(value, str | list | tuple | dict | set):
        _check_length(len(value))
    return value


def _check_length(length: int) -> None:
    if length > MAX_VALUE_LEN:
        raise LimitExceeded(f"a value longer than {MAX_VALUE_LEN:,} characters or items")


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"an integer larger than {MAX_INT_BITS:,} bits")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**`` and ``+`` whose result would be too big, before computing it."""
    ints = all(isinstance(v, int) for v in (left, right))
    sized = (str, list, tuple)
    if operator == "*" and ints:
        _check_bits(left.bit_length() + right.bit_length())
    elif operator == "*" and isinstance(left, sized) and isinstance(right, int):
        _check_length(len(left) * right)
    elif operator == "*" and isinstance(right, sized) and isinstance(left, int):
        _check_length(len(right) * left)
    elif operator == "**" and ints and abs(left) > 1 and right > 0:
        _check_bits(left.bit_length() * right)
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        _check_length(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_printf_widths(left)


def _check_printf_widths(template: str) -> None:
    for match in _PRINTF_FIELD.finditer(template):
        for size in match.groups():
            if size == "*" or (size is not None and int(size) > MAX_WIDTH):
                raise LimitExceeded(f"a format width over {MAX_WIDTH:,} (or '*') in {template!r}")


def _check_format_widths(template: str) -> None:
    for _text, _field, spec, _conversion in string.Formatter().parse(template):
        if not spec:
            continue
        if "{" in spec or any(int(n) > MAX_WIDTH for n in re.findall(r"\d+", spec)):
            raise LimitExceeded(f"a format width over {MAX_WIDTH:,} (or nested) in {template!r}")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter so its width arguments are capped and its result size checked."""

    @functools.wraps(function)  # also copies Jinja's pass_context/pass_environment marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if name in _WIDTH_FILTERS:
            for value in [*args[1:], *kwargs.values()]:
                if isinstance(value, int | str) and _width(value) > MAX_WIDTH:
                    raise LimitExceeded(f"the {name} filter with a size over {MAX_WIDTH:,}")
        if name == "format" and args and isinstance(args[0], str):
            _check_printf_widths(args[0])
        return _check_size(function(*args, **kwargs))

    return bounded


def _width(value: int | str) -> int:
    return len(value) if isinstance(value, str) else abs(value)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus the work and size limits described at the top of the module.

    Immutable rather than the plain sandbox: templates only read their data, so list and dict
    mutators (``tags.append``, ``attributes.update``) are refused. That keeps one recipient's render
    from changing the data of the next, and closes the easiest way to grow a list without bound.
    Unknown names and attributes render empty (``ChainableUndefined``): a subscriber without
    ``attributes.plan`` must still get the message.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=ChainableUndefined, **options)
        # lipsum(n) generates n paragraphs: an unbounded amount of text that no newsletter needs.
        del self.globals["lipsum"]
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_COUNT_ITEMS] = _count_items
        self.filters[_COUNT_OUTPUT] = _count_output
        self.filters[_CHECK_SIZE] = _check_size

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _PADDING_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an undefined value here, which renders as "" unless used further; a
        # template that reaches for internals is refused at once instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_widths(value.__self__)
        return wrapped

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget.get().spend_step()
        if isinstance(__obj, LoopContext) and args:
            # loop(children) in a recursive for-loop iterates outside the rewritten For node.
            args = (_counted(args[0]), *args[1:])
        return _check_size(super().call(__context, __obj, *args, **kwargs))

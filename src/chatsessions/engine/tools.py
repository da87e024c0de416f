"""Tool definitions from what callers hand us, and Python functions as tools.

A caller may give a chat's tools as :class:`Tool` objects, as dicts (flat
``{"name", "description", "parameters"}`` or OpenAI's ``{"type": "function",
"function": {...}}``) or as plain Python functions. A function's JSON schema comes from
its signature through pydantic (the same validation its arguments get when the model
calls it), its description from its docstring: no schema generator of our own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from chatsessions.engine.content import check_content
from chatsessions.errors import InvalidInput
from chatsessions.types import TOOL_NAME, Tool, ToolCall, ToolOptions, parts_json
from chatsessions.validation import check_text

#: OpenAI's limit on the tools of one request.
MAX_TOOLS = 128
MAX_DESCRIPTION_CHARS = 10_000
MAX_SCHEMA_BYTES = 65_536
#: What a tool's output may hold; longer outputs are cut (the model sees that they were).
MAX_OUTPUT_CHARS = 100_000

#: What a caller may offer as a tool: a definition, a dict, or a Python function.
ToolSpec = Tool | Mapping[str, Any] | Callable[..., Any]

#: ``name: text`` / ``name (type): text`` lines of a Google-style ``Args:`` section, and
#: Sphinx's ``:param name: text``.
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.+)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?)\s*:?\s*$")


def check_tools(specs: Iterable[ToolSpec] | None, *, field: str = "tools") -> tuple[Tool, ...]:
    """The tool definitions ``specs`` describe, checked: valid unique names, an object
    schema of bounded size. A refusal names the offending entry."""
    if specs is None:
        return ()
    if isinstance(specs, (str, bytes, Mapping)):
        raise InvalidInput(f"{field} must be a list of tools")
    tools: list[Tool] = []
    for index, spec in enumerate(specs):
        where = f"{field}.{index}"
        if isinstance(spec, Tool):
            tool = spec
        elif isinstance(spec, FunctionTool):
            tool = spec.tool
        elif isinstance(spec, Mapping):
            tool = _tool_of_dict(spec, where)
        elif callable(spec):
            tool = FunctionTool.from_function(spec).tool
        else:
            raise InvalidInput(f"{where} must be a tool definition or a function")
        tools.append(_checked(tool, where))
    if len(tools) > MAX_TOOLS:
        raise InvalidInput(f"{field}: {len(tools)} tools; the limit is {MAX_TOOLS}")
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{field}: two tools have the same name")
    return tuple(tools)


def _tool_of_dict(spec: Mapping[str, Any], where: str) -> Tool:
    if spec.get("type", "function") != "function":
        raise InvalidInput(f"{where}.type: only function tools are supported")
    inner = spec.get("function", spec)
    if not isinstance(inner, Mapping):
        raise InvalidInput(f"{where}.function must be an object")
    unknown = set(inner) - {"name", "description", "parameters", "strict", "type"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")
    description = inner.get("description") or ""
    parameters = inner.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    name = inner.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"{where}.name must be a string")
    return Tool(name=name, description=description, parameters=parameters)


def _checked(tool: Tool, where: str) -> Tool:
    if not isinstance(tool.name, str) or not TOOL_NAME.match(tool.name):
        raise InvalidInput(f"{where}.name must be 1 to 64 letters, digits, _ or -")
    check_text(tool.description, field=f"{where}.description",
               max_chars=MAX_DESCRIPTION_CHARS, allow_empty=True)
    if not isinstance(tool.parameters, Mapping) or tool.parameters.get("type") != "object":
        raise InvalidInput(f'{where}.parameters must be a JSON schema of "type": "object"')
    try:
        size = len(json.dumps(tool.parameters, ensure_ascii=False).encode())
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}.parameters is not JSON") from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidInput(f"{where}.parameters is {size} bytes; the limit is "
                           f"{MAX_SCHEMA_BYTES}")
    return tool


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A Python function (sync or async) offered to the model, with the pydantic model
    its arguments are validated against before it runs."""

    tool: Tool
    function: Callable[..., Any]
    arguments: type[BaseModel]

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None) -> FunctionTool:
        """Name, description and argument schema from the function itself: its
        ``__name__``, its docstring's text (its ``Args:`` entries describe the
        parameters) and its type hints (unannotated parameters take any JSON)."""
        signature = inspect.signature(function)
        hints = get_type_hints(function, include_extras=True)
        summary, documented = _parse_docstring(inspect.getdoc(function) or "")
        fields: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise InvalidInput(f"{function.__name__}: *args and **kwargs cannot be "
                                   "offered to a model; name each parameter")
            if param.kind is param.POSITIONAL_ONLY:
                raise InvalidInput(f"{function.__name__}: positional-only parameters "
                                   "cannot be passed by name")
            annotation = hints.get(param.name, Any)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation,
                                  Field(default, description=documented.get(param.name)))
        model = create_model(
            f"{function.__name__}_arguments", __config__=ConfigDict(extra="forbid"),
            **fields)
        tool = Tool(name=name or function.__name__,
                    description=description if description is not None else summary,
                    parameters=_schema(model))
        return cls(_checked(tool, name or function.__name__), function, model)

    async def run(self, call: ToolCall) -> str:
        """The call's output as the model should see it. Bad arguments and exceptions
        become an ``error: ...`` output, so the model can correct itself: a failing tool
        is part of the conversation, not a crash of the turn."""
        try:
            raw = json.loads(call.arguments or "{}")
            kwargs = self.arguments.model_validate(raw if raw is not None else {})
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc.msg})"
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()[:5])
            return f"error: invalid arguments for {self.tool.name}: {problems}"
        values = {name: getattr(kwargs, name) for name in type(kwargs).model_fields}
        try:
            if inspect.iscoroutinefunction(self.function):
                result = await self.function(**values)
            else:  # a blocking function must not stall every other chat
                result = await asyncio.to_thread(self.function, **values)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return render_output(result)


def render_output(result: Any) -> str:
    """A function's return value as text: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(to_jsonable_python(result), ensure_ascii=False)
        except Exception:  # not representable: the model still gets something readable
            text = str(result)
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:MAX_OUTPUT_CHARS] + f"… [cut: {len(text)} characters]"
    return text


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without pydantic's generated titles (noise to a model)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's text before its first section, and each documented parameter."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    for line in doc.splitlines():
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            params[sphinx.group(1)] = sphinx.group(2).strip()
            section = "sphinx"
            continue
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1).lower()
            continue
        if section is None:
            summary.append(line)
        elif section in ("args", "arguments", "parameters"):
            entry = _ARG_LINE.match(line)
            if entry:
                params[entry.group(1).lstrip("*")] = entry.group(2).strip()
    return "\n".join(summary).strip(), params


def check_tool_choice(choice: Any, tools: tuple[Tool, ...]) -> str | None:
    """``auto``, ``none``, ``required`` or the name of one of ``tools``; None: the
    provider's default."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice  # type: ignore[no-any-return]
    if isinstance(choice, Mapping):  # OpenAI's {"type": "function", "function": {"name"}}
        inner = choice.get("function", choice)
        choice = inner.get("name") if isinstance(inner, Mapping) else None
    if not isinstance(choice, str) or choice not in {tool.name for tool in tools}:
        raise InvalidInput('tool_choice must be "auto", "none", "required" or the name of '
                           "one of the tools offered")
    return choice


def tool_options(specs: Iterable[ToolSpec] | None, choice: Any = None,
                 parallel: bool | None = None) -> ToolOptions | None:
    """The checked options of one call; None when nothing about tools was said."""
    if specs is None and choice is None and parallel is None:
        return None
    tools = check_tools(specs)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidInput("parallel_tool_calls must be true or false")
    return ToolOptions(tools, check_tool_choice(choice, tools), parallel)


def functions_of(specs: Iterable[ToolSpec] | None) -> dict[str, FunctionTool]:
    """The Python functions among ``specs``, by tool name: what the loop can run."""
    if specs is None or isinstance(specs, (str, bytes, Mapping)):
        return {}
    found: dict[str, FunctionTool] = {}
    for spec in specs:
        if isinstance(spec, FunctionTool):
            found[spec.tool.name] = spec
        elif callable(spec) and not isinstance(spec, (Tool, Mapping)):
            function = FunctionTool.from_function(spec)
            found[function.tool.name] = function
    return found


def check_chat_message(item: Any, max_chars: int) -> dict[str, Any]:
    """One message of a stateless completion (OpenAI's chat shape), checked: system, user
    and assistant text, an assistant's ``tool_calls`` (content may then be null), and a
    tool output with its ``tool_call_id``. Returned as the plain dict backends take."""
    role = item.get("role") if isinstance(item, Mapping) else None
    if role not in ("system", "user", "assistant", "tool"):
        raise InvalidInput("each message must be an object with a role of system, user, "
                           "assistant or tool")
    content = item.get("content")
    calls = item.get("tool_calls") if role == "assistant" else None
    if calls:
        if content is not None:
            content = check_text(content, field="message content", max_chars=max_chars,
                                 allow_empty=True)
        return {"role": role, "content": content,
                "tool_calls": [call.as_openai() for call in check_calls(calls)]}
    if role == "user" and isinstance(content, list):  # text and images, as parts
        text, parts = check_content(content, field="message content", max_chars=max_chars,
                                    allow_empty=True)
        return {"role": role, "content": text if parts is None else parts_json(parts)}
    content = check_text(content, field="message content", max_chars=max_chars,
                         allow_empty=True)
    if role != "tool":
        return {"role": role, "content": content}
    call_id = item.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidInput("a tool message needs the tool_call_id of the call it answers")
    return {"role": role, "content": content, "tool_call_id": call_id}


def check_calls(calls: Any) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls`` as given by a caller: each with an id and a
    valid function name, ids unique."""
    if not isinstance(calls, (list, tuple)):
        raise InvalidInput("tool_calls must be a list")
    checked: list[ToolCall] = []
    for index, raw in enumerate(calls):
        if isinstance(raw, ToolCall):
            call = raw
        else:
            try:
                call = ToolCall.from_openai(raw)
            except (AttributeError, KeyError, TypeError):
                raise InvalidInput(f"tool_calls.{index} must be an object with a function "
                                   "name and arguments") from None
        if not call.id or not TOOL_NAME.match(call.name):
            raise InvalidInput(f"tool_calls.{index} needs an id and a valid function name")
        checked.append(call)
    if len({call.id for call in checked}) != len(checked):
        raise InvalidInput("two tool calls have the same id")
    return tuple(checked)


def check_pairing(messages: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a history that would show the model a call without its output or an output
    without its call (OpenAI refuses both; a model shown them answers nonsense)."""
    waiting: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                raise InvalidInput(f"the tool output for {call_id!r} answers no call of the "
                                   "assistant message before it")
            waiting.remove(call_id)
            continue
        if waiting:
            raise InvalidInput("the assistant's tool calls " + ", ".join(waiting)
                               + " have no output before the next message")
        if role == "assistant":
            waiting = [call["id"] for call in message.get("tool_calls") or ()]
    if waiting:
        raise InvalidInput("the assistant's tool calls " + ", ".join(waiting)
                           + " have no output")

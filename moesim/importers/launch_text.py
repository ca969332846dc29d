"""The text of Megatron-LM arguments -> a token list: a file or a string, plain or a launch script.

Plain text may span lines (``\\`` continuations) and hold ``#`` comments; a launcher before the
script (``torchrun ... pretrain_gpt.py``) is dropped and said. A launch script that keeps its
flags in bash arrays (``MODEL_ARGS=( ... )``, as Megatron-LM's ``examples/`` do) is read as bash
would run it, top to bottom: plain ``NAME=value`` variables (``${NAME:-default}`` takes the
default, ``$(( ... ))`` integer arithmetic of literals and known variables is evaluated), arrays
defined, re-defined (``A=("${A[@]}" --more)``) and appended (``A+=( ... )``), and ``if`` /
``elif`` / ``else`` branches whose tests (``[[ "$X" == "fp8" ]]``, ``-z``, ``-n``, ``-eq``...)
use only the script's own variables; the arrays the launch line expands after the script are
the arguments, in order. What it cannot decide (a test of a file or of the environment, the
inside of ``case`` and loops) is not read and named in the notes; a flag that needs a number or
a choice but holds an expression it cannot evaluate is an error naming the flag.
"""
from __future__ import annotations

import ast
import operator
import re
import shlex
from collections.abc import Collection
from pathlib import Path

from moesim.errors import ConfigError


def argument_tokens(text_or_path: str | Path, notes: list[str], literal_flags: Collection[str] = ()) -> list[str]:
    """The argument tokens of ``text_or_path`` (see the module docstring); what was dropped or
    assumed goes to ``notes``. A flag of ``literal_flags`` (one whose value Megatron converts: an
    int, a float, a choice) followed by a shell expression left unevaluated is a ConfigError."""
    text = _text(text_or_path)
    shell = _Shell()
    script = shell.run_script(text, notes)
    if script is None:
        tokens = _drop_launcher([shell.expand(t) for t in _tokens(text)], notes)
    else:
        tokens = script
    _check_literals(tokens, set(literal_flags), shell)
    return tokens


def _text(value: str | Path) -> str:
    """The arguments: a file's text, or the text itself (anything holding a ``--flag``)."""
    looks_like_args = isinstance(value, str) and str(value).lstrip().startswith("--")
    p = Path(value) if not looks_like_args and "\n" not in str(value) and len(str(value)) < 1024 else None
    if p is not None and p.is_file():
        return p.read_text(encoding="utf-8", errors="replace")
    if isinstance(value, Path) or "--" not in str(value):
        raise ConfigError("--megatron-args", f"{str(value)!r} is neither a file nor arguments",
                          "give a file of arguments, or the arguments in quotes")
    return str(value)


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as err:
        raise ConfigError("--megatron-args", f"cannot split the arguments ({err})", "close every quote") from None


_ARRAY_START = re.compile(r"^[ \t]*(?:(?:export|declare[ \t]+-a|local)[ \t]+)?([A-Za-z_]\w*)(\+?)=\(", re.M)
_ASSIGN = re.compile(r"^(?:export[ \t]+|readonly[ \t]+|local[ \t]+)?([A-Za-z_]\w*)=(.*)$")
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
_ARRAY_REF = re.compile(r"\$\{(\w+)\[[@*]\]\}")
_OPENERS = {"if": "if", "case": "case", "while": "loop", "until": "loop", "for": "loop", "select": "loop"}
_CLOSERS = {"fi": "if", "esac": "case", "done": "loop"}


class _Shell:
    """A small reader of the bash a launch script is written in (see the module docstring)."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.arrays: dict[str, list[str]] = {}
        self.why: dict[str, str] = {}          # a name or expression left as written -> why
        self.undecided: list[str] = []         # arrays / variables set only where the reader cannot tell
        self.decided: list[str] = []           # tests it evaluated, with their outcome
        self.frames: list[dict] = []           # open if / case / loop blocks

    # -- values ------------------------------------------------------------------------------
    def expand(self, word: str) -> str:
        """``word`` with ``$((...))`` and variables substituted; what cannot be is left as written
        (and ``why`` says why)."""
        word = self._arithmetic(word)

        def one(m: re.Match) -> str:
            name = m.group(1) or m.group(3)
            value = self.env.get(name)
            if value is not None and "$" not in value:
                return value
            if value is None and m.group(2) is not None:
                return m.group(2).strip('"').strip("'")
            self.why.setdefault(name, f"{name} = {value!r} is not evaluated" if value is not None
                                else f"{name} is not set in the text")
            return m.group(0)
        return _VAR.sub(one, word)

    def _arithmetic(self, word: str) -> str:
        out, i = [], 0
        while (start := word.find("$((", i)) >= 0:
            end = _closing(word, start + 1)
            if end < 0 or not word.startswith("))", end - 1):
                break
            expr = word[start + 3:end - 1]
            value = self._evaluate(expr)
            out.append(word[i:start] + (str(value) if value is not None else word[start:end + 1]))
            if value is None:
                names = [n for n in dict.fromkeys(re.findall(r"[A-Za-z_]\w*", expr))
                         if not re.fullmatch(r"-?\d+", self.env.get(n, "").strip())]
                self.why.setdefault(word[start:end + 1], f"$(({expr})) needs "
                                    + (", ".join(f"{n} (not a known integer)" for n in names) if names
                                       else "more than integer arithmetic"))
            i = end + 1
        return "".join(out) + word[i:]

    def _evaluate(self, expr: str) -> int | None:
        """Integer arithmetic of literals and the script's variables (bash ``$(( ))``), else None."""
        def name(m: re.Match) -> str:
            value = self.env.get(m.group(1) or m.group(2) or m.group(3), "")
            return value if re.fullmatch(r"-?\d+", value.strip()) else "_unknown_"
        text = re.sub(r"\$\{(\w+)\}|\$(\w+)|\b([A-Za-z_]\w*)\b", name, expr).replace("/", "//")
        try:
            return _int_expr(ast.parse(text.strip(), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
            return None

    # -- the script ----------------------------------------------------------------------------
    def run_script(self, text: str, notes: list[str]) -> list[str] | None:
        """The tokens of a launch script that keeps its arguments in bash arrays; None when the
        text has no array."""
        if not _ARRAY_START.search(text):
            return None
        lines = text.replace("\\\n", " ").split("\n")
        i = 0
        while i < len(lines):
            m = _ARRAY_START.match(lines[i])
            if m:
                body, i = _array_body(lines, i, m.end())
                self._array(m.group(1), bool(m.group(2)), body)
                continue
            for statement in _statements(_code(lines[i])):
                self._statement(statement)
            i += 1
        names = _launched_arrays(lines, list(dict.fromkeys([*self.arrays, *self.undecided])))
        tokens = [t for n in names for t in self.arrays.get(n, [])]
        skipped = [n for n in names if n not in self.arrays]
        undecided = sorted(set(self.undecided))
        notes.append(f"launch script: read the argument arrays {', '.join(n for n in names if n in self.arrays)}"
                     + (f"; branches decided: {'; '.join(self.decided)}" if self.decided else "")
                     + (f"; set or appended only inside if/case/loop blocks the script's own variables do not "
                        f"decide, not read: {', '.join(undecided)}" if undecided else "")
                     + (f"; arrays never set: {', '.join(skipped)}" if skipped else "")
                     + (f"; variables left as written: {', '.join(sorted(n for n in self.why if '$' not in n))}"
                        if any("$" not in n for n in self.why) else ""))
        return tokens

    def _active(self) -> bool | None:
        """True: this line runs; False: it does not; None: the reader cannot tell."""
        states = [f["state"] for f in self.frames]
        return False if False in states else (None if None in states else True)

    def _array(self, name: str, append: bool, body: str) -> None:
        try:
            words = shlex.split(body, comments=True)
        except ValueError as err:
            raise ConfigError("--megatron-args", f"cannot split the array {name} ({err})",
                              "close every quote") from None
        values: list[str] = []
        for w in words:
            ref = _ARRAY_REF.fullmatch(w)
            if ref:
                values += self.arrays.get(ref.group(1), [])
                continue
            values += _split_pair(self.expand(w))
        active = self._active()
        if active:
            self.arrays[name] = (self.arrays.get(name, []) if append else []) + values
            self._mark_decided()
        elif active is None:
            self.undecided.append(name)
        else:
            self._mark_decided()

    def _statement(self, s: str) -> None:
        words = s.split()
        if not words:
            return
        head = words[0]
        if head in ("then", "do", "else") and len(words) > 1 and head != "else":
            return self._statement(s.split(None, 1)[1])
        if head == "if":
            self.frames.append({"kind": "if", "state": None, "taken": False, "text": "", "used": False})
            return self._branch(s[2:].strip())
        if head == "elif" and self.frames and self.frames[-1]["kind"] == "if":
            return self._branch(s[4:].strip())
        if head == "else" and self.frames and self.frames[-1]["kind"] == "if":
            f = self.frames[-1]
            f["state"] = None if f["taken"] is None else not f["taken"]
            rest = s[4:].strip()
            return self._statement(rest) if rest else None
        if head in _OPENERS:
            self.frames.append({"kind": _OPENERS[head], "state": None})
            return None
        if head in _CLOSERS:
            while self.frames and self.frames[-1]["kind"] != _CLOSERS[head]:
                self.frames.pop()
            if self.frames:
                f = self.frames.pop()
                if f.get("used") and f.get("taken") is not None:
                    self.decided.append(f["text"])
            return None
        m = _ASSIGN.match(s)
        if m and not m.group(2).startswith("("):
            self._assign(m.group(1), m.group(2))

    def _branch(self, test: str) -> None:
        f = self.frames[-1]
        test = re.sub(r"[;\s]*then\s*$", "", test).strip()
        if f["taken"] is None:          # an earlier test was undecided: so is every later branch
            f["state"] = None
            return
        if f["taken"]:
            f["state"] = False
            return
        value = self._test(test)
        f["state"] = value
        if value is None:
            f["taken"] = None
        elif value:
            f["taken"] = True
        f["text"] = (f["text"] + ", " if f["text"] else "") + f"{test} ({'true' if value else 'false'})"

    def _mark_decided(self) -> None:
        for f in self.frames:
            if f["kind"] == "if" and f.get("taken") is not None:
                f["used"] = True

    def _assign(self, name: str, raw: str) -> None:
        raw = raw.strip()
        if raw.startswith("$(("):
            end = _closing(raw, 1)
            word = raw[:end + 1] if end > 0 else raw
        else:
            try:
                parts = shlex.split(raw, comments=True)
            except ValueError:
                parts = [raw]
            word = parts[0] if parts else ""
        active = self._active()
        if active:
            value = self.expand(word)
            self.env[name] = value
            if "$" in value or "`" in value:
                inner = [why for what, why in self.why.items() if _mentions(value, what)]
                self.why[name] = f"{name} = {word!r} is not evaluated" + (f": {'; '.join(inner)}" if inner else "")
            else:
                self.why.pop(name, None)
            self._mark_decided()
        elif active is None and name not in self.env:
            self.undecided.append(name)
            self.why.setdefault(name, f"{name} is set only inside a block the reader cannot decide")

    def _test(self, text: str) -> bool | None:
        """A ``[[ ]]`` / ``[ ]`` test list joined by ``&&`` / ``||``, from the script's variables."""
        parts = re.split(r"\s*(\|\||&&)\s*", text)
        result = self._one_test(parts[0])
        for op, part in zip(parts[1::2], parts[2::2]):
            if result is None:
                return None
            if (op == "||" and result) or (op == "&&" and not result):
                continue
            result = self._one_test(part)
        return result

    def _one_test(self, text: str) -> bool | None:
        m = re.fullmatch(r"\[\[\s*(.*?)\s*\]\]|\[\s+(.*?)\s+\]", text.strip())
        if not m:
            return None
        try:
            words = shlex.split(m.group(1) if m.group(1) is not None else m.group(2))
        except ValueError:
            return None
        negate = bool(words) and words[0] == "!"
        words = words[1:] if negate else words
        values = [self.expand(w) for w in words]
        if any("$" in v or "`" in v for v in values) or any(w.startswith("$") and w[1:2] == "#" for w in words):
            return None
        result: bool | None = None
        if len(values) == 2 and values[0] in ("-z", "-n"):
            result = (values[1] == "") == (values[0] == "-z")
        elif len(values) == 3 and values[1] in ("==", "=", "!="):
            if any(c in words[2] for c in "*?["):
                return None
            result = (values[0] == values[2]) == (values[1] != "!=")
        elif len(values) == 3 and values[1] in _NUMERIC:
            try:
                result = _NUMERIC[values[1]](int(values[0]), int(values[2]))
            except ValueError:
                return None
        return None if result is None else result != negate


_NUMERIC = {"-eq": operator.eq, "-ne": operator.ne, "-gt": operator.gt, "-lt": operator.lt, "-ge": operator.ge,
            "-le": operator.le}
_INT_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
            ast.Mod: operator.mod, ast.Pow: operator.pow}


def _int_expr(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _int_expr(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _INT_OPS:
        left, right = _int_expr(node.left), _int_expr(node.right)
        if isinstance(node.op, ast.Pow) and (right < 0 or right > 64):
            raise ValueError("exponent")
        if isinstance(node.op, ast.FloorDiv):   # bash divides toward zero
            return int(left / right) if right else left // right
        return _INT_OPS[type(node.op)](left, right)
    raise ValueError("not integer arithmetic")


def _closing(text: str, open_at: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``open_at``, or -1."""
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _array_body(lines: list[str], i: int, start: int) -> tuple[str, int]:
    """The body of the array opened at ``lines[i][start]``: up to its ``)`` on that line, else up
    to the line that starts with ``)``; and the index of the line after it."""
    first = lines[i][start:]
    end = _closing("(" + first, 0)
    if end > 0:
        return first[:end - 1], i + 1
    for j in range(i + 1, len(lines)):
        if re.match(r"^[ \t]*\)", lines[j]):
            return "\n".join([first, *lines[i + 1:j]]), j + 1
    return "\n".join([first, *lines[i + 1:]]), len(lines)


def _code(line: str) -> str:
    """``line`` without its comment, the ``;`` inside quotes blanked (statements split on the rest)."""
    out, quote = [], ""
    for k, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
                out.append(c)
            else:
                out.append(c if c not in ";" else " ")
            continue
        if c in "\"'":
            quote = c
        elif c == "#" and (k == 0 or line[k - 1] in " \t;"):
            break
        out.append(c)
    return "".join(out)


def _statements(code: str) -> list[str]:
    """The ``;``-separated statements of a line (``;;`` of ``case`` too)."""
    return [s.strip() for s in re.split(r";;?", code) if s.strip()]


def _launched_arrays(lines: list[str], known: list[str]) -> list[str]:
    """The arrays the launch line expands after the script (those before it are the launcher's)."""
    launch = next((line for line in lines if "[@]" in line and not _ARRAY_START.match(line)
                   and ("torchrun" in line or ".py" in line or "python" in line)), "")
    refs: list[str] = []
    script_seen = False
    for w in launch.split()[1:]:
        m = re.fullmatch(r"\"?\$\{(\w+)\[@\]\}\"?", w)
        if m is None:
            w = w.strip("\"'")
            script_seen = script_seen or w.endswith(".py") or w.startswith("$")
            continue
        if script_seen and m.group(1) in known:
            refs.append(m.group(1))
    return refs or known


def _split_pair(token: str) -> list[str]:
    """``"--flag value"`` quoted as one word -> ``["--flag", "value"]``."""
    return token.split() if token.startswith("--") and " " in token else [token]


def _check_literals(tokens: list[str], literal_flags: set[str], shell: _Shell) -> None:
    """A flag whose value Megatron converts (int, float, choice) must hold a literal."""
    for k, t in enumerate(tokens):
        flag, eq, value = t.partition("=")
        if flag not in literal_flags:
            continue
        if not eq:
            if k + 1 >= len(tokens):
                continue
            value = tokens[k + 1]
        if "$" not in value and "`" not in value:
            continue
        reasons = [why for what, why in shell.why.items() if _mentions(value, what)]
        raise ConfigError(flag, f"{value!r} is a shell expression moesim cannot evaluate"
                          + (f" ({'; '.join(reasons)})" if reasons else ""),
                          f"give the literal value ({flag} N), or set the variable to a literal in the script")


def _mentions(value: str, what: str) -> bool:
    """Whether ``value`` holds the expression ``what`` (``$((...))``) or a reference to variable ``what``."""
    return what in value if "$" in what else bool(re.search(r"\$\{?" + re.escape(what) + r"\b", value))


def _drop_launcher(tokens: list[str], notes: list[str]) -> list[str]:
    scripts = [i for i, t in enumerate(tokens) if t.endswith(".py")]
    if scripts:
        dropped = tokens[:scripts[-1] + 1]
        notes.append(f"launcher dropped: {' '.join(dropped)}")
        return tokens[scripts[-1] + 1:]
    return tokens

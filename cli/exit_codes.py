"""The CLI's exit codes: one table, used by every command, ``--help`` and the README."""

OK = 0
#: Invalid input: a patient state, a rule pack, a file that cannot be read or parsed; or a check
#: failed: lint found an error, a scenario failed or coverage fell short, a diff found an unbumped
#: version, the audit chain is broken (`audit verify`), a replay differs (`audit replay`), the audit
#: log cannot be used, or a recommendation was withheld under `recommend --require-audit`.
INVALID = 1
#: Usage error (unknown option, missing argument): click's own code.
USAGE = 2
#: The recommendation was produced and shown, but could not be written to the audit log
#: (`recommend` without --require-audit; the warning on stderr says why).
NOT_RECORDED = 3
#: The rule engine failed; no recommendation was produced. Please report it.
ENGINE_FAILURE = 4

TABLE = (
    (OK, "success"),
    (INVALID, "invalid input (patient state, rule pack, file) or a failed check (lint error, failing scenario, "
              "coverage too low, unbumped rule version, broken audit chain, replay differs); message on stderr"),
    (USAGE, "usage error: unknown option or missing argument"),
    (NOT_RECORDED, "recommendation shown but NOT recorded in the audit log"),
    (ENGINE_FAILURE, "rule engine failure: nothing was recommended"),
)


def help_text() -> str:
    """The exit-code table as help text (click keeps ``\\b`` blocks unwrapped)."""
    lines = ["\b", "Exit codes:"] + [f"  {code}  {meaning}" for code, meaning in TABLE]
    return "\n".join(lines)

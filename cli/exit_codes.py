"""The CLI's exit codes: one table, used by every command, ``--help`` and the README."""

OK = 0
#: Invalid input: a patient state, a rule pack, a file that cannot be read or parsed. Also:
#: a broken audit chain (`audit verify`), a replay that differs (`audit replay`), an audit
#: log that cannot be used, and a recommendation withheld under `recommend --require-audit`.
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
    (INVALID, "invalid input or rule pack (message on stderr); audit log unusable, chain broken, replay differs"),
    (USAGE, "usage error: unknown option or missing argument"),
    (NOT_RECORDED, "recommendation shown but NOT recorded in the audit log"),
    (ENGINE_FAILURE, "rule engine failure: nothing was recommended"),
)


def help_text() -> str:
    """The exit-code table as help text (click keeps ``\\b`` blocks unwrapped)."""
    lines = ["\b", "Exit codes:"] + [f"  {code}  {meaning}" for code, meaning in TABLE]
    return "\n".join(lines)

"""User-facing errors: one line naming the problem and the fix, exit code 2."""


class UserError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits with code 2.

    Raise it *before* anything is written, so that bad input never leaves a half-written output.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)

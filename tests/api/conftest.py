"""Prints the fuzzing figures at the end of the run (the README quotes them)."""

import sys


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.api.test_fuzz")
    if fuzz is None or not fuzz.FIGURES["requests"]:
        return
    figures = fuzz.FIGURES
    documented = {
        f"{method.upper()} {path}"
        for path, methods in fuzz.schema.raw_schema["paths"].items()
        for method in methods
    }
    covered = len(documented & figures["operations"])
    terminalreporter.write_line(
        f"fuzzing: {covered} of {len(documented)} operations fuzzed, "
        f"{figures['requests']} requests generated, {figures['server_errors']} 5xx seen, "
        f"{figures['followed_links']} calls along links, "
        f"{figures['flaky_restarts']} stateful runs restarted after FlakyStrategyDefinition"
    )

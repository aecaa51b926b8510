"""The README documents what the code does: every setting, the two commands first."""

from pathlib import Path

from backprop.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    for name, field in Settings.model_fields.items():
        row = next(
            (line for line in README.splitlines() if line.startswith(f"| `{name.upper()}`")), None
        )
        assert row is not None, f"{name.upper()} is missing from the README's table"
        assert field.description in row


def test_the_two_commands_come_first():
    first_block = README.split("```", 2)[1]
    assert "make run" in first_block and "make test" in first_block

"""The README's Quickstart and CI agree: exactly two commands, and .ci/run runs the second one."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_quickstart_has_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    assert "scripts/train.py --config configs/phantom.py" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


def test_readme_config_files_exist():
    for name in re.findall(r"configs/(\w+)\.py", (REPO / "README.md").read_text()):
        assert (REPO / "configs" / f"{name}.py").is_file(), name

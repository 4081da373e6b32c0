"""Input limits of detectors.config.load_yaml: huge files, alias bombs, binary or non-UTF-8
files and absurd nesting are one-line ConfigErrors naming the file, found before any expensive work."""

from __future__ import annotations

import pytest
import yaml

from detectors import config as config_module
from detectors.config import MAX_YAML_BYTES, MAX_YAML_DEPTH, load_yaml
from detectors.errors import ConfigError


def alias_bomb() -> str:
    """The classic "billion laughs": 9 levels of 9 aliases each, 9^9 = 387 million strings expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def error_of(path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 300, message
    return info.value


def test_a_huge_yaml_is_refused_without_being_parsed(tmp_path, monkeypatch) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "w") as handle:
        handle.write("data:\n")
        line = 0
        while handle.tell() <= 10_000_000:
            handle.write(f"  key{line}: value{line}\n")
            line += 1

    def no_parsing(*args, **kwargs):
        raise AssertionError("a 10 MB YAML must be refused before PyYAML parses it (65 s)")

    monkeypatch.setattr(config_module.yaml, "SafeLoader", no_parsing)
    error = error_of(path)
    assert "too large for a YAML configuration (9.5 MiB; the limit is 1 MiB)" in error.problem


def test_the_size_limit_admits_a_file_of_exactly_the_limit(tmp_path) -> None:
    path = tmp_path / "limit.yaml"
    body = "a: 1\n"
    path.write_text(body + "#" * (MAX_YAML_BYTES - len(body) - 1) + "\n")
    assert load_yaml(path) == {"a": 1}
    path.write_text(body + "#" * (MAX_YAML_BYTES - len(body)) + "\n")
    assert "too large" in error_of(path).problem


def test_an_alias_bomb_is_refused_before_construction(tmp_path, monkeypatch) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 600
    constructed = []
    real = yaml.SafeLoader.construct_document
    monkeypatch.setattr(
        yaml.SafeLoader, "construct_document", lambda self, node: constructed.append(node) or real(self, node)
    )
    assert "aliases expand to more than 1,000,000 values (an alias bomb?)" in error_of(path).problem
    assert constructed == []


def test_aliases_in_ordinary_use_still_load(tmp_path) -> None:
    text = (
        "base: &base {lr: 0.001, batch_size: 8}\n"
        "image: {<<: *base, lr: 0.01}\n"
        "sizes: &sizes [224, 224]\n"
        "video: {resize: *sizes, extra: [*sizes, *sizes]}\n"
    )
    path = tmp_path / "anchors.yaml"
    path.write_text(text)
    assert load_yaml(path) == yaml.safe_load(text)


def test_a_recursive_alias_is_refused(tmp_path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    assert "recursive alias" in error_of(path).problem


@pytest.mark.parametrize("depth", [MAX_YAML_DEPTH + 5, 5000])  # deeper than the limit; deep enough for RecursionError
def test_deep_nesting_is_refused(tmp_path, depth) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * depth + "]" * depth + "\n")
    assert error_of(path).problem == f"nested too deeply (more than {MAX_YAML_DEPTH} levels)"


def test_nesting_within_the_limit_loads(tmp_path) -> None:
    path = tmp_path / "nested.yaml"
    depth = MAX_YAML_DEPTH - 2  # the top-level mapping and its key count too
    path.write_text("a: " + "[" * depth + "]" * depth + "\n")
    value = load_yaml(path)["a"]
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize(
    "content, problem",
    [
        (bytes(range(256)) * 4, "a binary file, not YAML text: is this the right file?"),
        ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"),
        (b"name: a\x07b\n", "invalid YAML: unacceptable character #x0007 at character 7"),
    ],
)
def test_binary_and_non_utf8_files_are_one_line_errors(tmp_path, content, problem) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert error_of(path).problem == problem


def test_a_utf8_bom_is_accepted_and_a_directory_is_named(tmp_path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: caf\u00e9\n".encode("utf-8"))
    assert load_yaml(path) == {"name": "caf\u00e9"}
    assert error_of(tmp_path).problem == "is a directory, not a YAML file"


def test_fit_with_an_alias_bomb_as_config_exits_2_with_one_line(tmp_path, capsys) -> None:
    from detectors.training.fit import run_fit
    from detectors.video.fit import DEFAULT_ARCH, VIDEO, VIDEO_ARCHS

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    with pytest.raises(SystemExit) as info:
        run_fit("video", VIDEO, VIDEO_ARCHS, DEFAULT_ARCH, ["--config", str(bomb), "--output", str(tmp_path / "run")])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {bomb}: its aliases expand") and "\n" not in error
    assert not (tmp_path / "run").exists()

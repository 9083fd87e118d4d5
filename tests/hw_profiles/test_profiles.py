"""Hardware profiles: every shipped TOML file loads, and bad extra profiles fail loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hw_profiles import (
    PROFILE_SCHEMA_VERSION,
    Profile,
    ProfileError,
    UnknownProfileError,
    get_profile,
    list_profiles,
    load_profile_file,
    profile_dirs,
)

BUILTIN = Path(profile_dirs()[0])

GOOD = """\
schema_version = 1
name = "{name}"
[target]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
[measure]
via = "rpc"
tracker = "127.0.0.1:9190"
key = "board"
"""


def _write(root: Path, name: str, text: str) -> Path:
    path = root / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def extra_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HWNAS_PROFILE_DIR (a new path, so the loader's cache holds nothing for it)."""
    root = tmp_path / "profiles"
    root.mkdir()
    monkeypatch.setenv("HWNAS_PROFILE_DIR", str(root))
    return root


def test_x86_local_ships() -> None:
    names = [p.name for p in list_profiles()]
    assert "x86/local" in names
    assert names == sorted(names)


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_builtin_profile_loads(profile: Profile) -> None:
    path = BUILTIN / f"{profile.name}.toml"
    assert path.is_file(), f"{profile.name} must live at {path}"
    assert load_profile_file(path) == profile
    assert get_profile(profile.name) == profile
    assert profile.schema_version == PROFILE_SCHEMA_VERSION
    assert isinstance(profile.target["kind"], str) and profile.target["kind"]
    if profile.measure.via == "rpc":
        assert profile.measure.host or (profile.measure.tracker and profile.measure.key)
    assert profile.is_local == (profile.measure.via == "local")


def test_x86_local_measure_settings() -> None:
    p = get_profile("x86/local")
    assert p.is_local
    assert p.target["kind"] == "llvm"
    assert p.measure.repeat >= 3
    assert p.measure.threads == 1


def test_extra_dir_profile_is_listed(extra_dir: Path) -> None:
    _write(extra_dir, "arm/board", GOOD.format(name="arm/board"))
    assert extra_dir in profile_dirs()
    names = [p.name for p in list_profiles()]
    assert "arm/board" in names and "x86/local" in names
    board = get_profile("arm/board")
    assert board.target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
    assert not board.is_local
    assert board.measure.key == "board"


def test_several_extra_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "vendor/one", GOOD.format(name="vendor/one"))
    _write(b, "vendor/two", GOOD.format(name="vendor/two"))
    monkeypatch.setenv("HWNAS_PROFILE_DIR", os.pathsep.join([str(a), str(b)]))
    assert {"vendor/one", "vendor/two"} <= {p.name for p in list_profiles()}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.format(name="arm/board") + "color = 'red'\n", "color"),
        (GOOD.format(name="arm/board").replace("[measure]", "[measure]\nrepeats = 3"), "repeats"),
        (GOOD.format(name="arm/board") + "[supports]\nint4 = true\n", "int4"),
    ],
    ids=["top-level", "measure", "supports"],
)
def test_unknown_key_is_an_error(extra_dir: Path, text: str, message: str) -> None:
    path = _write(extra_dir, "arm/board", text)
    with pytest.raises(ProfileError, match="Extra inputs are not permitted") as info:
        get_profile("x86/local")
    assert message in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(ProfileError):
        load_profile_file(path)


@pytest.mark.parametrize(
    "measure",
    [
        'via = "rpc"',
        'via = "rpc"\ntracker = "127.0.0.1:9190"',
        'via = "rpc"\nkey = "board"',
    ],
    ids=["nothing", "tracker-without-key", "key-without-tracker"],
)
def test_rpc_needs_an_address(extra_dir: Path, measure: str) -> None:
    text = f'name = "arm/board"\n[target]\nkind = "llvm"\n[measure]\n{measure}\n'
    _write(extra_dir, "arm/board", text)
    with pytest.raises(ProfileError, match="needs tracker \\+ key, or host"):
        list_profiles()


def test_rpc_with_host_is_enough(extra_dir: Path) -> None:
    text = 'name = "arm/board"\n[target]\nkind = "llvm"\n[measure]\nvia = "rpc"\nhost = "h:9090"\n'
    _write(extra_dir, "arm/board", text)
    assert get_profile("arm/board").measure.host == "h:9090"


def test_name_must_match_path(extra_dir: Path) -> None:
    _write(extra_dir, "arm/board", GOOD.format(name="arm/other"))
    with pytest.raises(ProfileError, match="must match its path 'arm/board'") as info:
        list_profiles()
    assert "'arm/other'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "arm/board"\n[target]\nmtriple = "x"\n', "target.kind is required"),
        ('name = "arm/board"\n', "target"),
        (
            GOOD.format(name="arm/board").replace("schema_version = 1", "schema_version = 2"),
            "schema_version 2 is not supported",
        ),
        ('name = "arm/board"\n[target\nkind = "llvm"\n', "arm/board.toml"),
        (GOOD.format(name="arm/board").replace("[measure]", "[measure]\nrepeat = 1"), "repeat"),
    ],
    ids=["no-kind", "no-target", "schema-version", "bad-toml", "repeat-too-low"],
)
def test_invalid_profile_file(extra_dir: Path, text: str, message: str) -> None:
    path = _write(extra_dir, "arm/board", text)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_profile_lists_known(extra_dir: Path) -> None:
    _write(extra_dir, "arm/board", GOOD.format(name="arm/board"))
    with pytest.raises(UnknownProfileError) as info:
        get_profile("arm/nope")
    assert isinstance(info.value, KeyError)
    msg = str(info.value)
    assert "unknown hardware profile 'arm/nope'" in msg
    assert "'arm/board'" in msg and "'x86/local'" in msg

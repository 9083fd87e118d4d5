"""Hardware profiles: every shipped TOML file loads, and bad extra profiles fail loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hw_profiles import (
    PROFILE_SCHEMA_VERSION,
    RPC_TRACKER_ENV,
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


SHIPPED = ["arm/rasp4b64", "arm/rasp5", "nvidia/a100", "nvidia/h100", "x86/local"]


def test_shipped_profiles() -> None:
    names = [p.name for p in list_profiles()]
    assert set(SHIPPED) <= set(names)
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


@pytest.mark.parametrize(
    ("name", "mcpu", "int8_dot", "fp16"),
    [("arm/rasp4b64", "cortex-a72", "none", False), ("arm/rasp5", "cortex-a76", "sdot", True)],
)
def test_arm_profiles_measure_over_rpc(name: str, mcpu: str, int8_dot: str, fp16: bool) -> None:
    p = get_profile(name)
    assert p.target["mtriple"] == "aarch64-linux-gnu" and p.target["mcpu"] == mcpu
    assert p.target["num-cores"] == 4 and "+neon" in p.target["mattr"]
    assert ("+dotprod" in p.target["mattr"]) == (int8_dot == "sdot")
    assert (p.measure.via, p.measure.tracker) == ("rpc", "127.0.0.1:9190")
    assert p.measure.key == name.split("/")[1]
    assert (p.supports.int8_dot, p.supports.fp16) == (int8_dot, fp16)
    assert p.cross_compiler == "aarch64-linux-gnu-gcc"
    assert p.requires


@pytest.mark.parametrize(("name", "arch"), [("nvidia/h100", "sm_90"), ("nvidia/a100", "sm_80")])
def test_nvidia_profiles_measure_on_this_host(name: str, arch: str) -> None:
    p = get_profile(name)
    assert p.target == {"kind": "cuda", "arch": arch}
    assert p.is_local and p.cross_compiler is None
    assert p.supports.fp16 and p.supports.int8_dot == "none"  # no DP4A tensorization yet
    assert p.requires


def test_rpc_tracker_env_moves_builtin_profiles_only(
    extra_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(extra_dir, "lab/board", GOOD.format(name="lab/board"))
    monkeypatch.setenv(RPC_TRACKER_ENV, "tracker.lab:9000")
    assert get_profile("arm/rasp4b64").measure.tracker == "tracker.lab:9000"
    assert get_profile("arm/rasp5").measure.tracker == "tracker.lab:9000"
    assert get_profile("lab/board").measure.tracker == "127.0.0.1:9190"  # its own file wins
    assert get_profile("x86/local").measure.tracker is None
    monkeypatch.setenv(RPC_TRACKER_ENV, "no-port")
    with pytest.raises(ProfileError, match=f"{RPC_TRACKER_ENV}: 'no-port' is not host:port"):
        list_profiles()
    monkeypatch.delenv(RPC_TRACKER_ENV)
    assert get_profile("arm/rasp5").measure.tracker == "127.0.0.1:9190"


def test_extra_dir_profile_replaces_a_builtin(extra_dir: Path) -> None:
    text = GOOD.format(name="arm/rasp5").replace("127.0.0.1:9190", "10.0.0.7:9190")
    _write(extra_dir, "arm/rasp5", text.replace("[target]", 'requires = "the lab Pi"\n[target]'))
    p = get_profile("arm/rasp5")
    assert (p.measure.tracker, p.requires) == ("10.0.0.7:9190", "the lab Pi")


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
def test_unknown_key_is_an_error(
    extra_dir: Path, text: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(extra_dir, "arm/board", text)
    with pytest.raises(ProfileError, match="Extra inputs are not permitted") as info:
        load_profile_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    # listed: the bad file is skipped with a warning naming it, the others still load
    with caplog.at_level("WARNING", logger="hw_profiles._loader"):
        assert get_profile("x86/local").name == "x86/local"
    assert "arm/board" not in [p.name for p in list_profiles()]
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert str(path) in warning and message in warning


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
    path = _write(extra_dir, "arm/board", text)
    with pytest.raises(ProfileError, match="needs tracker \\+ key, or host"):
        load_profile_file(path)


def test_rpc_with_host_is_enough(extra_dir: Path) -> None:
    text = 'name = "arm/board"\n[target]\nkind = "llvm"\n[measure]\nvia = "rpc"\nhost = "h:9090"\n'
    _write(extra_dir, "arm/board", text)
    assert get_profile("arm/board").measure.host == "h:9090"


def test_name_must_match_path(extra_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(extra_dir, "arm/board", GOOD.format(name="arm/other"))
    with caplog.at_level("WARNING", logger="hw_profiles._loader"):
        names = [p.name for p in list_profiles()]
    assert "arm/other" not in names and "arm/board" not in names and "x86/local" in names
    assert "must match its path 'arm/board'" in caplog.text and "'arm/other'" in caplog.text


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
        (GOOD.format(name="arm/board").replace(":9190", ""), "'127.0.0.1' is not host:port"),
        (GOOD.format(name="arm/board").replace(":9190", ":70000"), "is not host:port"),
    ],
    ids=["no-kind", "no-target", "schema-version", "bad-toml", "repeat-too-low", "no-port", "port"],
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

"""The locks in requirements/ and setup.cfg agree: every locked package that setup.cfg names is
inside its declared range, both locks name the same versions, every pin carries hashes, and the
environment the suite runs in is the one the development lock names (so a green run is a green
run of the lock)."""

import configparser
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUN_LOCK = ROOT / "requirements" / "run.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def declared() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    """setup.cfg's install_requires and extras_require."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def lines(text: str) -> list[Requirement]:
        return [Requirement(line) for line in text.splitlines() if line.strip()]

    runtime = lines(config["options"]["install_requires"])
    extras = {name: lines(text) for name, text in config["options.extras_require"].items()}
    return runtime, extras


def locked(path: Path) -> dict[str, Version]:
    """Every pin of a lock file, by canonical name; fails on a pin without a hash."""
    pins: dict[str, Version] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    for block in blocks:
        match = PIN.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        assert "--hash=sha256:" in block, f"{path.name}: {name} is pinned without a hash"
        pins[name] = Version(match.group(2))
    assert pins, f"{path.name} pins nothing"
    return pins


def test_every_runtime_dependency_is_locked_inside_its_range_with_an_upper_bound() -> None:
    runtime, _ = declared()
    run, dev = locked(RUN_LOCK), locked(DEV_LOCK)
    for requirement in runtime:
        name = canonicalize_name(requirement.name)
        assert any(spec.operator == "<" for spec in requirement.specifier), (
            f"setup.cfg: {requirement} needs an upper bound (the next major)"
        )
        for pins, lock in ((run, RUN_LOCK), (dev, DEV_LOCK)):
            assert name in pins, f"{lock.name} does not lock {name}"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock.name} locks {name}=={pins[name]}, outside setup.cfg's {requirement}"
            )


def test_every_extra_is_locked_inside_its_range() -> None:
    _, extras = declared()
    dev = locked(DEV_LOCK)
    for extra, requirements in extras.items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            assert name in dev, f"dev.txt does not lock {name} (extra {extra})"
            assert requirement.specifier.contains(dev[name], prereleases=True), (
                f"dev.txt locks {name}=={dev[name]}, outside setup.cfg's {requirement} ({extra})"
            )


def test_the_two_locks_name_the_same_versions() -> None:
    run, dev = locked(RUN_LOCK), locked(DEV_LOCK)
    assert set(run) <= set(dev), f"only in run.txt: {sorted(set(run) - set(dev))}"
    differ = {name: (run[name], dev[name]) for name in run if run[name] != dev[name]}
    assert differ == {}


def test_this_environment_is_the_lock() -> None:
    """The suite runs on what dev.txt names (make test installs it with --require-hashes)."""
    installed = {name: Version(metadata.version(name)) for name in locked(DEV_LOCK)}
    differ = {
        name: (str(installed[name]), str(pin))
        for name, pin in locked(DEV_LOCK).items()
        if installed[name] != pin
    }
    assert differ == {}

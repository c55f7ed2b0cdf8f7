from dataclasses import dataclass

import pytest

from shared.config import describe, load_config, redacted, setting
from shared.errors import ConfigError


@dataclass
class Demo:
    name: str = setting("dev", "Device name.")
    window_s: float = setting(10.0, "Window length.", ge=1, le=3600)
    level: str = setting("full", "Automation.", choices=("shadow", "full"))
    keys: list[str] = setting([], "Trusted keys.")
    vad_aggressiveness: int = setting(2, "VAD mode.", ge=0, le=3)
    password: str | None = setting(None, "Secret.", secret=True)
    realtime: bool = setting(False, "Pace input.")

    def check(self):
        if self.level == "full" and self.window_s > 600:
            raise ConfigError("full automation needs window_s <= 600")


def test_precedence_file_then_env_then_flags(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text('name = "file"\nwindow_s = 20\n[vad]\naggressiveness = 3\n')
    env = {"X_NAME": "env", "X_KEYS": "a.pub, b.pub", "X_REALTIME": "yes"}
    cfg = load_config(Demo, file=f, env=env, env_prefix="X_", overrides={"window_s": "30"})
    assert (cfg.name, cfg.window_s, cfg.vad_aggressiveness, cfg.keys, cfg.realtime) == ("env", 30.0, 3, ["a.pub", "b.pub"], True)


@pytest.mark.parametrize("kwargs, message", [
    ({"overrides": {"bogus": 1}}, "unknown setting"),
    ({"env": {"X_BOGUS": "1"}, "env_prefix": "X_"}, "unknown environment variable X_BOGUS"),
    ({"overrides": {"window_s": 0}}, ">= 1"),
    ({"overrides": {"level": "auto"}}, "must be one of"),
    ({"overrides": {"vad_aggressiveness": "two"}}, "not valid"),
    ({"overrides": {"window_s": 700}}, "needs window_s"),
])
def test_bad_values_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Demo, env=kwargs.pop("env", {}), **kwargs)


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text("[vad]\nagressiveness = 1\n")
    with pytest.raises(ConfigError, match="vad_agressiveness"):
        load_config(Demo, file=f, env={})


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text("name = ")
    with pytest.raises(ConfigError, match="a.toml"):
        load_config(Demo, file=f, env={})


def test_describe_and_redacted():
    rows = {r["name"]: r for r in describe(Demo)}
    assert rows["window_s"]["ge"] == 1 and rows["window_s"]["description"] == "Window length."
    assert redacted(Demo(password="hunter2"))["password"] == "***"

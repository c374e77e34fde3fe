"""`python -m console`: options checked before Streamlit starts; a bad one is a one-line error."""
import subprocess
import sys

import pytest

from console.services.common import ConsoleError, Settings, parse_endpoints, parse_servers
from tests.conftest import REPO


def test_bad_server_option_is_one_line_and_exit_2():
    out = subprocess.run([sys.executable, "-m", "console", "--server", "don-rf:8080"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: model server 'don-rf:8080': expected NAME=http://HOST:PORT or "
                                  "NAME@TRACK=http://HOST:PORT (TRACK: stable, canary, ...)")


def test_servers_and_settings_from_the_environment(tmp_path):
    assert list(parse_servers("don-rf=http://a:8080/, don-tf=https://b")) == ["don-rf", "don-tf"]
    assert parse_servers("don-rf=http://a:8080/")["don-rf"] == "http://a:8080"
    with pytest.raises(ConsoleError, match="expected NAME=http"):
        parse_servers("=http://a")
    # tracks: NAME@TRACK=URL; a model given by tracks only is addressed by its stable track
    servers, tracks = parse_endpoints("don-rf=http://rf, don-rf@stable=http://s/, don-rf@canary=http://c,"
                                      "don-tf@canary=http://tc, don-tf@stable=http://ts")
    assert servers == {"don-rf": "http://rf", "don-tf": "http://ts"}
    assert tracks == {"don-rf": {"stable": "http://s", "canary": "http://c"},
                      "don-tf": {"canary": "http://tc", "stable": "http://ts"}}
    for bad in ("don-rf@=http://a", "don-rf@Canary=http://a", "@canary=http://a", "don-rf@canary=a"):
        with pytest.raises(ConsoleError, match="NAME@TRACK=http"):
            parse_endpoints(bad)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    settings = Settings.from_env({"DON_CONSOLE_SERVERS": "don-rf=http://a", "DON_CONSOLE_CONTROL": "true",
                                  "DON_API_TOKEN_FILE": str(token)})
    assert settings.control and settings.token() == "s3cret" and settings.store is None
    with pytest.raises(ConsoleError, match="API token file .*missing"):
        Settings(token_file=str(tmp_path / "missing")).token()

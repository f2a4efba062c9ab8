"""What the daemon enforces on a startup config before the supervisor sees it."""

from __future__ import annotations

import pytest

from kdf_remote.daemon.daemon_log import redactor
from kdf_remote.daemon.errors import BadRequestError
from kdf_remote.daemon.services import InstanceService, main_spec
from kdf_remote.daemon.settings import Settings
from kdf_remote.kdf.password import check_password
from kdf_remote.supervisor.supervisor import Supervisor

pytestmark = pytest.mark.unit


def _service(settings: Settings) -> InstanceService:
    return InstanceService(settings, Supervisor)


def test_rpc_stays_on_loopback_on_the_instance_port(settings: Settings) -> None:
    """rpcip, rpc_local_only and rpcport are forced whatever the caller sent."""
    config = _service(settings).prepare_config(
        "main",
        b'{"disable_p2p": true, "rpcip": "0.0.0.0", "rpc_local_only": false, "rpcport": 4321}',
    )
    assert config.rpcip == "127.0.0.1"
    assert config.rpc_local_only is True
    assert config.rpcport == settings.kdf.rpc_port


def test_missing_rpc_password_is_generated_to_kdf_policy(settings: Settings) -> None:
    """A config without rpc_password gets one that KDF's policy accepts, and it is redacted."""
    config = _service(settings).prepare_config("main", b'{"disable_p2p": true}')
    assert config.rpc_password is not None
    assert check_password(config.rpc_password) is None
    assert redactor(f"pw {config.rpc_password}") == "pw ***"


def test_given_secrets_are_kept_and_registered_for_redaction(settings: Settings) -> None:
    """The caller's rpc_password and passphrase are used and never logged afterwards."""
    config = _service(settings).prepare_config(
        "main",
        b'{"disable_p2p": true, "rpc_password": "Given-Pass-42!", "passphrase": "seed words x"}',
    )
    assert config.rpc_password == "Given-Pass-42!"
    assert redactor("Given-Pass-42! seed words x") == "*** ***"


def test_https_is_refused(settings: Settings) -> None:
    """KDF serving TLS itself would cut the daemon off from it: refused with the reason."""
    with pytest.raises(BadRequestError, match="https: got true"):
        _service(settings).prepare_config("main", b'{"disable_p2p": true, "https": true}')


def test_main_spec_follows_the_kdf_section(settings: Settings) -> None:
    """main's spec takes binary, dirs, port, timeouts, log caps and restart policy from kdf:."""
    spec = main_spec(settings)
    assert spec.name == "main"
    assert spec.binary_path == settings.kdf.binary_path
    assert spec.run_dir == settings.daemon.state_dir / "instances" / "main"
    assert spec.rpc_port == settings.kdf.rpc_port
    assert spec.timeouts.start_s == settings.kdf.start_timeout
    assert spec.timeouts.stop_rpc_s == settings.kdf.stop_timeout
    assert spec.log_max_bytes == settings.kdf.log_max_size
    assert spec.restart.max_restart_attempts == settings.kdf.max_restart_attempts
    assert spec.health_interval_s == settings.daemon.health_check_interval

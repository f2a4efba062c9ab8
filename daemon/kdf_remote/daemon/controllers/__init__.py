"""REST controllers, one module per area: system, instances, logs, health, rpc."""

from __future__ import annotations

from kdf_remote.daemon.controllers.health import HealthController
from kdf_remote.daemon.controllers.instances import InstancesController
from kdf_remote.daemon.controllers.logs import logs_controller
from kdf_remote.daemon.controllers.rpc import RpcController
from kdf_remote.daemon.controllers.system import SystemController

__all__ = [
    "HealthController",
    "InstancesController",
    "RpcController",
    "SystemController",
    "logs_controller",
]

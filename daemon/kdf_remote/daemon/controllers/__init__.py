"""REST controllers, one module per area: system, instances, logs, health, rpc, workers,
metrics, KDF updates, backups."""

from __future__ import annotations

from kdf_remote.daemon.controllers.backups import BackupsController
from kdf_remote.daemon.controllers.health import HealthController
from kdf_remote.daemon.controllers.instances import InstancesController
from kdf_remote.daemon.controllers.kdf_update import KdfUpdateController
from kdf_remote.daemon.controllers.logs import logs_controller
from kdf_remote.daemon.controllers.metrics import MetricsController
from kdf_remote.daemon.controllers.rpc import RpcController
from kdf_remote.daemon.controllers.system import SystemController
from kdf_remote.daemon.controllers.workers import CapacityController, WorkersController

__all__ = [
    "BackupsController",
    "CapacityController",
    "HealthController",
    "InstancesController",
    "KdfUpdateController",
    "MetricsController",
    "RpcController",
    "SystemController",
    "WorkersController",
    "logs_controller",
]
